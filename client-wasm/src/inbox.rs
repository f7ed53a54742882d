//! The event loop's queue: callbacks and timers put [`crate::app::Input`]s in, the loop
//! takes them out one at a time, in order.
//!
//! The page runs on one thread and never blocks it, so a `RefCell` is the whole of the
//! synchronisation. The one obligation is the wakeup: [`Inbox::next`] registers its waker
//! in the same borrow in which it finds the queue empty, so an item put in afterwards
//! always finds that waker (nothing can run between the two on one thread), and
//! [`Sender::send`] releases the borrow before it wakes the loop (wasm-bindgen-futures
//! polls woken tasks later, from its own queue, never inside `wake`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

struct Shared<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
}

/// Puts items in; cloned by each callback.
pub struct Sender<T>(Rc<RefCell<Shared<T>>>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Takes items out: the event loop's end.
pub struct Inbox<T>(Rc<RefCell<Shared<T>>>);

/// A new, empty queue.
pub fn inbox<T>() -> (Sender<T>, Inbox<T>) {
    let shared = Rc::new(RefCell::new(Shared {
        queue: VecDeque::new(),
        waker: None,
    }));
    (Sender(shared.clone()), Inbox(shared))
}

impl<T> Sender<T> {
    /// Puts `item` at the back of the queue.
    pub fn send(&self, item: T) {
        let waker = {
            let mut shared = self.0.borrow_mut();
            shared.queue.push_back(item);
            shared.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Inbox<T> {
    /// The item at the front of the queue, once there is one.
    pub async fn next(&mut self) -> T {
        poll_fn(|cx| {
            let mut shared = self.0.borrow_mut();
            match shared.queue.pop_front() {
                Some(item) => Poll::Ready(item),
                None => {
                    shared.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}
