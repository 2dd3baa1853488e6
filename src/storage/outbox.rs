//! The outbox: events ride in the journal's frames; the consumer (the
//! push hub, counters) reads them after their round is durable and moves a
//! durable cursor past what it handled.

use super::*;

/// What [`Storage::outbox_range`] read.
#[derive(Default)]
pub struct OutboxRound {
    /// (seq of the record's first event, its event count, the events that
    /// decode).
    pub records: Vec<(u64, u64, Vec<Event>)>,
    pub quarantined: Vec<Quarantined>,
}

/// An outbox event that did not decode.
#[derive(Clone, Debug)]
pub struct Quarantined {
    pub seq: u64,
    pub why: String,
    pub raw: Vec<u8>,
}

/// A quarantined event as kept (`q/`, seq): for the operator to look at.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuarantineRecord {
    pub seq: u64,
    pub why: String,
    /// Unix seconds when it was quarantined.
    pub at: i64,
    /// The event as stored (lossy UTF-8, at most 4096 characters).
    pub raw: String,
}

/// What one persist of the outbox consumer writes.
pub struct Consumed<'a> {
    pub records: &'a [u64],
    pub upto: u64,
    pub groups: &'a [(GroupId, Counters)],
    pub invites: &'a [(InviteId, Counters)],
    pub quarantined: &'a [Quarantined],
    pub feeds: &'a super::feeds::FeedBatch,
    pub webhooks: &'a super::webhooks::WebhookBatch,
}

impl Storage {
    /// Highest outbox seq known to be on disk; changes after every flush.
    pub fn durable_seq(&self) -> watch::Receiver<u64> {
        self.inner.durable_tx.subscribe()
    }

    pub fn outbox_cursor(&self) -> Result<u64> {
        cursor(&self.inner.tree)
    }

    /// Outbox records holding the events `cursor < seq <= upto`, in order,
    /// as (seq of the first, its event count, the events that decode, with
    /// their seqs). Records are consumed whole; an event that does not
    /// decode (written by a newer release, or damaged) is left out and
    /// returned in the second list, to be quarantined rather than block
    /// every event after it.
    pub fn outbox_range(&self, cursor: u64, upto: u64) -> Result<OutboxRound> {
        let outbox = self
            .inner
            .outbox
            .lock()
            .map_err(|_| StorageError::Io("outbox lock poisoned".into()))?;
        let mut round = OutboxRound::default();
        for (first, raw) in outbox.range(cursor + 1..=upto) {
            let mut events = Vec::with_capacity(raw.len());
            for (n, bytes) in raw.iter().enumerate() {
                let seq = first + n as u64;
                match serde_json::from_slice::<Event>(bytes) {
                    Ok(mut e) => {
                        e.seq = seq;
                        events.push(e);
                    }
                    Err(e) => round.quarantined.push(Quarantined {
                        seq,
                        why: e.to_string(),
                        raw: bytes.clone(),
                    }),
                }
            }
            round.records.push((*first, raw.len() as u64, events));
        }
        Ok(round)
    }

    /// The events quarantined so far, oldest first.
    pub fn quarantined_events(&self) -> Result<Vec<QuarantineRecord>> {
        self.scan(b"q/".to_vec())
    }

    /// Record that the outbox records `c.records` (all events up to
    /// `c.upto`) were consumed: store what they produced (counters, feeds,
    /// webhook deliveries) and the new cursor in one durable write set,
    /// then let the records go.
    pub async fn consume_outbox(&self, c: Consumed<'_>) -> Result<()> {
        let Consumed {
            records,
            upto,
            groups,
            invites,
            quarantined,
            feeds,
            webhooks,
        } = c;
        let mut w = WriteSet::new();
        w.local();
        Self::write_feeds(feeds, &mut w);
        w.webhook_batch(webhooks);
        if let Ok(legacy) = self.inner.legacy_outbox.lock() {
            for seq in records.iter().filter(|s| legacy.contains(s)) {
                w.del(key(b"o/", &[&seq.to_be_bytes()]));
            }
        }
        for q in quarantined {
            w.put_json(
                key(b"q/", &[&q.seq.to_be_bytes()]),
                &QuarantineRecord {
                    seq: q.seq,
                    why: q.why.clone(),
                    at: crate::clock::now(),
                    raw: String::from_utf8_lossy(&q.raw).chars().take(4096).collect(),
                },
            );
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
