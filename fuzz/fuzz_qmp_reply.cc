// A line from QEMU's QMP socket, classified as the client does; an error's
// description is read the way Execute reads it.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "qemu/qmp.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = agile::qemu::ParseQmpMessage(std::string_view(reinterpret_cast<const char*>(data), size));
  if (m.ok() && m->kind == agile::qemu::QmpMessage::Kind::kError && m->body.is_object() &&
      m->body.contains("desc") && m->body["desc"].is_string())
    (void)m->body["desc"].get<std::string>();
  return 0;
}
