// Every network wait agiled makes, bounded: the values of docs/timeouts.md's
// table, one place. agiled's flags set them (src/agiled/main.cc); the
// defaults are what a LAN between hosts of one rack needs, with room for a
// loaded 2-core TCG host. A value is a bound on one wait making no progress,
// not on a whole transfer: a 4 GiB migration is not a timeout, a link that
// moves nothing for migrate_io_ms is.
#pragma once

namespace agile {

struct Timeouts {
  // agile-memd: TCP connect plus HELLO (and the TLS handshake) of one dial.
  int memd_connect_ms = 3000;
  // agile-memd: one request (or one batch of a pipelined call) getting no
  // byte back or out for this long ends the connection as unreachable.
  int memd_request_ms = 10000;
  // Migration connection: one read or write moving no byte for this long
  // fails the migration (before the commit point: the source resumes). Also
  // the TCP_USER_TIMEOUT of every agiled TCP socket, so the kernel gives up
  // on unacknowledged data as soon.
  int migrate_io_ms = 15000;
  // Migration: an answer the peer has to work for (HELLO_ACK while it starts
  // QEMU, SWITCHOVER_ACK, DONE_ACK; the destination's limit on a silent source).
  int migrate_peer_ms = 120000;
  // Post-copy recovery: after switchover, how long both sides keep a
  // migration whose link broke (the source its paused VM and unsent pages,
  // the destination its partly filled RAM) waiting for a new connection.
  int migrate_recover_ms = 600000;
  // QEMU's device-state migration (x-ignore-shared: kilobytes) to complete.
  int device_state_ms = 60000;
  // One QMP command to be answered.
  int qmp_ms = 10000;
  // TCP keepalive on agiled's and memd links: first probe after this many
  // idle seconds, then every keepalive_interval_s; TCP_USER_TIMEOUT decides
  // when an unanswered probe ends the connection.
  int keepalive_idle_s = 5;
  int keepalive_interval_s = 2;
};

}  // namespace agile
