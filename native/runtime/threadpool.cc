#include "runtime/threadpool.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace gemma3 {
namespace {

// True on pool workers and inside a parallel_for: nested calls then run inline.
thread_local bool in_parallel = false;

class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 0; i < n - 1; ++i) workers_.emplace_back([this, i] { loop(i + 1); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return int(workers_.size()) + 1; }

  void run(int64_t n, int64_t chunks, const std::function<void(int64_t, int64_t)>& fn) {
    std::unique_lock<std::mutex> lk(mu_);
    fn_ = &fn;
    n_ = n;
    chunks_ = chunks;
    next_ = 0;
    pending_ = chunks;
    ++generation_;
    lk.unlock();
    cv_.notify_all();
    work();
    lk.lock();
    done_cv_.wait(lk, [this] { return pending_ == 0; });
    fn_ = nullptr;
  }

 private:
  // Claims chunks until none are left.
  void work() {
    for (;;) {
      int64_t c;
      const std::function<void(int64_t, int64_t)>* fn;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (fn_ == nullptr || next_ >= chunks_) return;
        c = next_++;
        fn = fn_;
      }
      int64_t b = n_ * c / chunks_, e = n_ * (c + 1) / chunks_;
      (*fn)(b, e);
      std::lock_guard<std::mutex> lk(mu_);
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }
  void loop(int) {
    in_parallel = true;
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      work();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunks_ = 0, next_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

int configured_threads() {
  if (const char* s = std::getenv("GEMMA3_NUM_THREADS")) {
    int v = std::atoi(s);
    if (v > 0) return v;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

Pool& pool() {
  static Pool* p = new Pool(configured_threads());  // leaked on purpose: no join at exit
  return *p;
}

}  // namespace

int num_threads() { return pool().size(); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int64_t chunks = std::min<int64_t>(n / std::max<int64_t>(grain, 1), int64_t(num_threads()) * 4);
  if (chunks <= 1 || in_parallel) {
    fn(0, n);
    return;
  }
  in_parallel = true;
  pool().run(n, chunks, fn);
  in_parallel = false;
}

}  // namespace gemma3
