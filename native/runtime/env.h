// The environment switches of the kernels' A/B knobs (GEMMA3_PDL, GEMMA3_QDOT_LANE, ...; listed in
// docs/deployment.md). Callers read a switch once into a static and keep their own value rules.
#pragma once
#include <cstdlib>
#include <cstring>

namespace gemma3 {

// Whether environment variable `name` is set to exactly `value`.
inline bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

// The integer value of `name` (strtol, base 10), 0 when unset or not a number.
inline long env_long(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::strtol(v, nullptr, 10) : 0;
}

// `name` as a positive int below 2^20, else `fallback`.
inline int env_int(const char* name, int fallback) {
  const long n = env_long(name);
  return n > 0 && n < (1 << 20) ? static_cast<int>(n) : fallback;
}

}  // namespace gemma3
