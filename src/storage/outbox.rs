//! The outbox: events ride in the journal's frames; the consumer (the
//! push hub, counters) reads them after their round is durable and moves a
//! durable cursor past what it handled.

use super::*;

impl Storage {
    /// Highest outbox seq known to be on disk; changes after every flush.
    pub fn durable_seq(&self) -> watch::Receiver<u64> {
        self.inner.durable_tx.subscribe()
    }

    pub fn outbox_cursor(&self) -> Result<u64> {
        cursor(&self.inner.tree)
    }

    /// Outbox records holding the events `cursor < seq <= upto`, in order,
    /// as (seq of the first, events with their seqs). Records are consumed whole.
    pub fn outbox_range(&self, cursor: u64, upto: u64) -> Result<Vec<(u64, Vec<Event>)>> {
        let outbox = self
            .inner
            .outbox
            .lock()
            .map_err(|_| StorageError::Io("outbox lock poisoned".into()))?;
        outbox
            .range(cursor + 1..=upto)
            .map(|(first, raw)| {
                let mut events = Vec::with_capacity(raw.len());
                for (n, bytes) in raw.iter().enumerate() {
                    let mut e: Event = serde_json::from_slice(bytes).map_err(|e| {
                        StorageError::Corrupt(
                            format!("outbox event {}", first + n as u64),
                            e.to_string(),
                        )
                    })?;
                    e.seq = first + n as u64;
                    events.push(e);
                }
                Ok((*first, events))
            })
            .collect()
    }

    /// Record that the outbox records `records` (all events up to `upto`) were
    /// consumed: store the counters they produced and the new cursor in one
    /// durable write set, then let the records go.
    pub async fn consume_outbox(
        &self,
        records: &[u64],
        upto: u64,
        groups: &[(GroupId, Counters)],
        invites: &[(InviteId, Counters)],
    ) -> Result<()> {
        let mut w = WriteSet::new();
        w.local();
        if let Ok(legacy) = self.inner.legacy_outbox.lock() {
            for seq in records.iter().filter(|s| legacy.contains(s)) {
                w.del(key(b"o/", &[&seq.to_be_bytes()]));
            }
        }
        for (g, c) in groups {
            w.put_json(key(b"cg/", &[g.as_bytes()]), c);
        }
        for (i, c) in invites {
            w.put_json(key(b"ci/", &[i.as_bytes()]), c);
        }
        w.put(CURSOR.to_vec(), upto.to_be_bytes().to_vec());
        self.submit(w).await?;
        if let Ok(mut outbox) = self.inner.outbox.lock() {
            for seq in records {
                outbox.remove(seq);
            }
        }
        if let Ok(mut legacy) = self.inner.legacy_outbox.lock() {
            for seq in records {
                legacy.remove(seq);
            }
        }
        Ok(())
    }
}
