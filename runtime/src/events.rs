//! Container events (CRI `GetContainerEvents`, kubelet's evented PLEG): a broadcast hub every
//! subscriber reads from at its own pace. A subscriber more than [`CAPACITY`] events behind is
//! dropped (it resubscribes and relists) instead of slowing the daemon. Events published before
//! the first subscriber of this daemon's life (the exits that happened while skiffd was down,
//! found at start) are kept, up to [`CAPACITY`], and handed to that first subscriber.
//! CRI calls only [`Hub::note`] what changed (no subscriber: nothing at all); the event, with
//! the statuses it carries, is built off the call's path by the task that takes
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
    /// Notes a change for the event builder, when anyone may want the event.
    pub fn note(&self, pod_id: &str, id: &str, kind: i32) {
        if self.wanted() {
            let _ = self.changes_tx.send(Change {
                pod_id: pod_id.to_string(),
                id: id.to_string(),
                kind,
                at: skiff_shim::api::now_ns(),
            });
        }
    }

    /// The noted changes, for the one task that builds events from them (None after).
    pub fn changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        self.changes_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

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

    /// Whether anyone is listening (events are worth building).
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
            || self
                .backlog
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
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
