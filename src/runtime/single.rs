//! One detection over everything taken in: `run` (alone), `detect`, `replay`, `demo`, `bench`.
//! (A group member has one per partition it owns: [`crate::group::Member`].)

use std::time::Instant;

use super::{Judge, Outputs};
use crate::engine::Detection;
use crate::engine::state::StateStore;
use crate::event::Event;
use crate::ingest::Offsets;

/// One detection; at a commit point the outputs and a checkpoint of the detection made
/// durable, in that order, and then the findings held since the last one released (when the
/// detection holds them, see [`Detection::holding`]: with checkpoints, no finding leaves before
/// the state that raised it is in one).
pub struct Single {
    /// Detection over everything taken in.
    pub detection: Detection,
    /// The checkpoint directory, if configured.
    pub state: Option<StateStore>,
    /// The offsets of the last checkpoint written: nothing was taken in since when they are
    /// the same, and the checkpoint on disk still holds the state.
    pub saved: Option<Offsets>,
}

impl Single {
    /// `detection` without checkpoints.
    pub fn new(detection: Detection) -> Single {
        Single {
            detection,
            state: None,
            saved: None,
        }
    }

    /// Checkpointed into `state`; `saved` are the offsets of the checkpoint it was restored
    /// from, if any.
    pub fn checkpointed(mut self, state: StateStore, saved: Option<Offsets>) -> Single {
        self.state = Some(state);
        self.saved = saved;
        self
    }

    fn held(&self, out: &Outputs) {
        if let Some(m) = &out.metrics {
            m.set_held(self.detection.held());
        }
    }

    /// Writes a checkpoint of the detection at `offsets` (nothing without `state.dir`).
    fn checkpoint(&mut self, offsets: &Offsets, out: &Outputs) -> anyhow::Result<()> {
        if let Some(state) = &mut self.state {
            let started = Instant::now();
            let path = state.save(&self.detection, offsets)?;
            let took = started.elapsed();
            if let Some(m) = &out.metrics {
                m.checkpoint(took);
            }
            tracing::debug!(
                file = %path.display(),
                identities = self.detection.engine().baseline().len(),
                waiting = self.detection.waiting(),
                seconds = took.as_secs_f64(),
                "Checkpoint written."
            );
            self.saved = Some(offsets.clone());
        }
        Ok(())
    }
}

impl Judge for Single {
    fn event(&mut self, _partition: Option<i32>, event: Event, out: &mut Outputs) {
        out.detect(&mut self.detection, event);
        self.held(out);
    }

    fn assigned(&mut self, partitions: &[(String, i32)], out: &mut Outputs) {
        out.assign(&mut self.detection, partitions);
        self.held(out);
    }

    fn idle(&mut self, topic: &str, partition: i32, idle: bool, out: &mut Outputs) {
        out.idle(&mut self.detection, topic, partition, idle);
        self.held(out);
    }

    fn durable(&mut self, offsets: &Offsets, out: &mut Outputs) -> anyhow::Result<()> {
        out.durable()?;
        // Held findings go into the checkpoint even when no record was read since the last
        // one (an idle partition released the events behind them).
        if self.saved.as_ref() != Some(offsets) || self.detection.held() > 0 {
            self.checkpoint(offsets, out)?;
        }
        if self.detection.held() > 0 {
            out.release(&mut self.detection);
            self.held(out);
            // Released: written out, and a checkpoint without them, so that a restart does not
            // release them again (only a crash in between does; the store and the sinks take
            // a finding they have once, the journal and the live stream show it twice).
            out.durable()?;
            self.saved = None;
            self.checkpoint(offsets, out)?;
        }
        Ok(())
    }

    /// Without checkpoints, the events still waiting for order are judged now; with, they are
    /// in the last checkpoint and judged after the restart, as if there had been none.
    fn finish(&mut self, out: &mut Outputs) {
        if self.state.is_none() {
            self.detection.finish(&mut |update| out.report(update));
            out.finished(&self.detection);
        }
    }
}
