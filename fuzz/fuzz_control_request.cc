// A control API request line as agiled's control server decodes it, then
// vm.start's arguments (the richest) as the API validates them, and the
// response written back (which must never throw).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "control/control_server.h"
#include "qemu/launch.h"

using namespace agile;
using nlohmann::json;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1u << 20)) return 0;  // LineReader's cap
  std::string_view line(reinterpret_cast<const char*>(data), size);
  auto req = control::ParseControlRequest(line);
  if (!req.ok()) return 0;
  auto spec = qemu::VmSpec::FromJson(req->args);
  if (spec.ok()) {
    (void)qemu::GuestCmdline(*spec);
    (void)qemu::QemuArgv(*spec, qemu::LaunchPaths{}, false);
    (void)spec->ToJson().dump();
  }
  if (req->args.is_object())
    if (auto w = req->args.find("workload_args"); w != req->args.end() && w->is_string())
      (void)qemu::ParseWorkloadArgs(w->get<std::string>());
  // What the server sends back can echo the request's strings.
  json resp = {{"ok", false}, {"op", req->op}, {"args", req->args}};
  (void)resp.dump(-1, ' ', false, json::error_handler_t::replace);
  return 0;
}
