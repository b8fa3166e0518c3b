//! Container events (CRI `GetContainerEvents`, kubelet's evented PLEG): a broadcast hub every
//! subscriber reads from at its own pace. A subscriber more than [`CAPACITY`] events behind is
//! dropped (it resubscribes and relists) instead of slowing the daemon. The exits that happened
//! while skiffd was down, found at start, are kept ([`Hub::note_kept`], up to [`CAPACITY`]) and
//! handed to the first subscriber of this daemon's life.
//! CRI calls only [`Hub::note`] what changed (with no subscriber: nothing at all); the event,
//! with the statuses it carries, is built off the call's path by the task that takes
//! [`Hub::changes`].

use std::sync::Mutex;

use skiff_proto::cri::ContainerEventResponse;
use tokio::sync::{broadcast, mpsc};

/// Events a subscriber may fall behind by, and events kept for the first subscriber.
pub const CAPACITY: usize = 1024;

/// What happened to a container (or pod, `id` = `pod_id`), and when.
pub struct Change {
    pub pod_id: String,
    pub id: String,
    pub kind: i32,
    pub at: i64,
}

pub struct Hub {
    tx: broadcast::Sender<ContainerEventResponse>,
    /// Until the first subscriber comes: what was published before it.
    backlog: Mutex<Option<Vec<ContainerEventResponse>>>,
    changes_tx: mpsc::UnboundedSender<Change>,
    changes_rx: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
}

impl Default for Hub {
    fn default() -> Self {
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        Hub {
            tx: broadcast::channel(CAPACITY).0,
            backlog: Mutex::new(Some(vec![])),
            changes_tx,
            changes_rx: Mutex::new(Some(changes_rx)),
        }
    }
}

impl Hub {
    /// Notes a change for the event builder when someone subscribes.
    pub fn note(&self, pod_id: &str, id: &str, kind: i32) {
        if self.tx.receiver_count() > 0 {
            self.note_kept(pod_id, id, kind);
        }
    }

    /// Notes a change whose event is kept for the first subscriber when there is none yet.
    pub fn note_kept(&self, pod_id: &str, id: &str, kind: i32) {
        let _ = self.changes_tx.send(Change {
            pod_id: pod_id.to_string(),
            id: id.to_string(),
            kind,
            at: skiff_shim::api::now_ns(),
        });
    }

    /// The noted changes, for the one task that builds events from them (None after).
    pub fn changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        self.changes_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Sends a built event to the subscribers, or keeps it for the first one.
    pub fn publish(&self, ev: ContainerEventResponse) {
        let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = backlog.as_mut() {
            if b.len() < CAPACITY {
                b.push(ev);
            }
            return;
        }
        // No receiver right now: nobody to tell.
        let _ = self.tx.send(ev);
    }

    /// A new subscription, and the events it must see first (the backlog, for the first one).
    pub fn subscribe(
        &self,
    ) -> (
        Vec<ContainerEventResponse>,
        broadcast::Receiver<ContainerEventResponse>,
    ) {
        let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        // Subscribed under the lock, so nothing published in between is lost.
        let rx = self.tx.subscribe();
        (backlog.take().unwrap_or_default(), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> ContainerEventResponse {
        ContainerEventResponse {
            container_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_first_subscriber_gets_what_came_before_it() {
        let hub = Hub::default();
        hub.publish(ev("a"));
        let (first, mut rx) = hub.subscribe();
        assert_eq!(first.len(), 1);
        hub.publish(ev("b"));
        assert_eq!(rx.try_recv().unwrap().container_id, "b");
        let (second, _) = hub.subscribe();
        assert!(second.is_empty());
    }

    #[test]
    fn changes_are_noted_for_subscribers_or_when_kept() {
        let hub = Hub::default();
        let mut changes = hub.changes().unwrap();
        hub.note("p", "a", 0);
        assert!(changes.try_recv().is_err(), "noted with nobody subscribed");
        hub.note_kept("p", "b", 0);
        assert_eq!(changes.try_recv().unwrap().id, "b");
        let _sub = hub.subscribe();
        hub.note("p", "c", 0);
        assert_eq!(changes.try_recv().unwrap().id, "c");
    }

    #[test]
    fn a_subscriber_far_behind_learns_it_lagged() {
        let hub = Hub::default();
        let (_, mut rx) = hub.subscribe();
        for i in 0..CAPACITY + 5 {
            hub.publish(ev(&i.to_string()));
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(5))
        ));
    }
}
