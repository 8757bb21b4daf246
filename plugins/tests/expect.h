// The C++ tests' failure count: each failed expectation prints one line; main exits non-zero when any failed.
#pragma once

#include <cstdio>
#include <string>

namespace rednet::testing {

inline int failures = 0;

inline void Expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAIL %s\n", what.c_str());
  }
}

}  // namespace rednet::testing
