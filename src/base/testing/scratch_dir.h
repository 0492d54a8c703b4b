// A directory of a test's own, made fresh by mkdtemp and removed with all it
// holds when the object goes. mkdtemp names it uniquely, so tests that ctest
// runs in parallel never share one; a directory that cannot be made fails the
// test where it is made, never as a confusing error further on.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

// In namespace agile, not agile::testing: that name would hide gtest's
// ::testing from the tests' unqualified testing::... inside namespace agile.
namespace agile {

class ScratchDir {
 public:
  // `parent` is /tmp for files; tests that need tmpfs semantics (a RAM file
  // QEMU or a shim maps) pass /dev/shm.
  explicit ScratchDir(std::string_view prefix, std::string_view parent = "/tmp") {
    std::string tmpl = std::string(parent) + "/" + std::string(prefix) + "-XXXXXX";
    if (::mkdtemp(tmpl.data()) != nullptr) {
      path_ = tmpl;
    } else {
      ADD_FAILURE() << "mkdtemp " << tmpl << ": " << std::error_code(errno, std::generic_category()).message();
    }
  }
  ~ScratchDir() {
    std::error_code ignored;  // a test may have removed it already
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

}  // namespace agile
