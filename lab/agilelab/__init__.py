"""agilelab: a multi-host testbed for agile on one Linux machine (lab/README.md).

Modules by concern: config (every constant), util (logging, commands, sizes),
procs (processes we start), netns (hosts as network namespaces), cgroups
(hosts' RAM), links (tc tbf), swap, state (the state file), topology (the
plan of a lab), lifecycle (up/down), status, vms (VM addresses, taps, agiled
VMs), sampling, experiment, report, plots; cli is `lab/agile-lab`.
"""
