//! What both front doors record of every call, in one place: it counts in the metrics from
//! arrival until its status is known, also when it fails or the client goes away.

use std::sync::Arc;
use std::time::Instant;

use crate::metrics::{Endpoint, Metrics, Outcome};

/// One call being served. Dropped before [`Call::finish`], it is counted as cancelled: the
/// client went away and the server dropped the work.
pub struct Call {
    metrics: Arc<Metrics>,
    endpoint: Endpoint,
    started: Instant,
    finished: bool,
}

impl Call {
    pub fn start(metrics: Arc<Metrics>, endpoint: Endpoint) -> Call {
        metrics.call_started(&endpoint);
        Call {
            metrics,
            endpoint,
            started: Instant::now(),
            finished: false,
        }
    }

    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.metrics
            .call_finished(&self.endpoint, outcome, self.started.elapsed());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record(Outcome::Cancelled);
    }
}
