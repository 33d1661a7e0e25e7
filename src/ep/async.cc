// Asynchronous calls: one communication thread per buffer runs the queued dispatch / combine
// calls in order; a synchronous call first waits for the queue to empty, so calls keep the
// order in which they were made on every rank (the collectives match up).
#include <future>

#include "core/core.h"
#include "ep/ep_impl.h"

namespace ff::ep {
namespace {

thread_local bool on_comm_thread = false;

}  // namespace

void Buffer::Impl::enter() {
  if (comm_thread && !on_comm_thread) {
    std::unique_lock lk(comm_thread->mu);
    comm_thread->idle.wait(lk,
                           [&] { return comm_thread->queue.empty() && comm_thread->running == 0; });
  }
  check_usable();
}

void Buffer::Impl::enqueue(std::function<void()> call) {
  int level = 0;
  MPI_Query_thread(&level);
  FF_CHECK(level == MPI_THREAD_MULTIPLE,
           "ep: asynchronous calls need MPI initialized with MPI_THREAD_MULTIPLE");
  if (!comm_thread) {
    comm_thread = std::make_unique<CommThread>();
    CommThread& t = *comm_thread;
    t.thread = std::thread([&t] {
      on_comm_thread = true;
      std::unique_lock lk(t.mu);
      for (;;) {
        t.wake.wait(lk, [&] { return t.stop || !t.queue.empty(); });
        if (t.queue.empty()) return;  // stop, and nothing left
        auto call = std::move(t.queue.front());
        t.queue.pop_front();
        ++t.running;
        lk.unlock();
        call();  // a packaged task: its exception goes to its future
        lk.lock();
        --t.running;
        if (t.queue.empty()) t.idle.notify_all();
      }
    });
  }
  {
    std::lock_guard lk(comm_thread->mu);
    comm_thread->queue.push_back(std::move(call));
  }
  comm_thread->wake.notify_one();
}

void Buffer::Impl::stop_comm_thread() {
  if (!comm_thread) return;
  {
    std::lock_guard lk(comm_thread->mu);
    comm_thread->stop = true;
  }
  comm_thread->wake.notify_one();
  comm_thread->thread.join();
  comm_thread.reset();
}

Event<DispatchResult> Buffer::dispatch_async(const DispatchArgs& args) {
  auto task = std::make_shared<std::packaged_task<DispatchResult()>>(
      [this, args] { return dispatch(args); });
  Event<DispatchResult> ev(task->get_future().share());
  impl_->enqueue([task] { (*task)(); });
  return ev;
}

Event<CombineResult> Buffer::combine_async(const uint16_t* x, const Handle& handle,
                                           const float* topk_weights, int num_topk,
                                           const uint16_t* bias0, const uint16_t* bias1,
                                           uint16_t* out) {
  auto task = std::make_shared<std::packaged_task<CombineResult()>>(
      [this, x, &handle, topk_weights, num_topk, bias0, bias1, out] {
        return combine(x, handle, topk_weights, num_topk, bias0, bias1, out);
      });
  Event<CombineResult> ev(task->get_future().share());
  impl_->enqueue([task] { (*task)(); });
  return ev;
}

}  // namespace ff::ep
