//! The solo engine: one node orders blocks on a fixed interval. The zero-setup default.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gridmesh_types::Address;

use crate::{AppError, Application, Finalized};

#[derive(Clone, Debug)]
pub struct SoloConfig {
    /// Time between block production attempts.
    pub block_interval: Duration,
    /// Produce blocks even when no transaction waits.
    pub empty_blocks: bool,
    /// The node's address, recorded as proposer.
    pub proposer: Address,
    /// Block time runs this many times faster than the wall clock, from the engine's start
    /// (simulations, demos and tests of 15-minute market slots; 1 on a real chain).
    pub time_scale: u32,
}

/// A request to a driven engine ([`SoloEngine::run_driven`]): produce the next block at
/// `timestamp_ms` and answer on `done` with its height, or why it failed.
pub struct Tick {
    pub timestamp_ms: u64,
    pub done: std::sync::mpsc::SyncSender<Result<u64, String>>,
}

pub struct SoloEngine<A: Application> {
    app: A,
    cfg: SoloConfig,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<A: Application> SoloEngine<A> {
    pub fn new(app: A, cfg: SoloConfig) -> Self {
        SoloEngine { app, cfg }
    }

    /// Produces and finalises one block, if there is anything to put in it (or empty blocks are on).
    pub fn step(&mut self, timestamp_ms: u64) -> Result<Option<Finalized>, AppError> {
        let due = self.app.has_due_work(timestamp_ms);
        if !self.cfg.empty_blocks && !due && !self.app.has_pending() {
            return Ok(None);
        }
        let block = self.app.propose(timestamp_ms, self.cfg.proposer)?;
        if block.txs.is_empty() && !self.cfg.empty_blocks && !due {
            return Ok(None);
        }
        self.app.finalize(&block).map(Some)
    }

    /// Runs until `shutdown` receives a message or its sender is dropped, calling `on_block` with every
    /// committed block and the time it took to build and commit it. A failed commit (e.g. a full
    /// disk) is logged and retried next interval; a fatal error ([`AppError::is_fatal`]) ends the run.
    pub fn run(self, shutdown: Receiver<()>, on_block: impl FnMut(&Finalized, Duration)) {
        self.run_from(shutdown, on_block, now_ms())
    }

    /// [`SoloEngine::run`] with block time starting at `start_ms` (then running `time_scale`
    /// times faster than the wall clock).
    pub fn run_from(
        mut self,
        shutdown: Receiver<()>,
        mut on_block: impl FnMut(&Finalized, Duration),
        start_ms: u64,
    ) {
        let mut next = Instant::now() + self.cfg.block_interval;
        let start = Instant::now();
        let scale = u64::from(self.cfg.time_scale.max(1));
        let clock = move || start_ms + start.elapsed().as_millis() as u64 * scale;
        loop {
            match shutdown.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            next += self.cfg.block_interval;
            let started = Instant::now();
            match self.step(clock()) {
                Ok(Some(f)) => {
                    let took = started.elapsed();
                    tracing::info!(
                        height = f.height,
                        txs = f.tx_count,
                        ms = took.as_millis() as u64,
                        "committed block"
                    );
                    on_block(&f, took);
                }
                Ok(None) => {}
                Err(e) if e.is_fatal() => {
                    tracing::error!(error = %e, "block engine stopping");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "block production failed; retrying next interval")
                }
            }
            if next < Instant::now() {
                next = Instant::now(); // fell behind: do not burst to catch up
            }
        }
    }
}

impl<A: Application> SoloEngine<A> {
    /// Runs on a clock driven from outside (the simulator's): every [`Tick`] produces one block
    /// at its time, empty or not, and is answered once the block is committed (or failed). When
    /// the driver goes (its sender dropped), the engine carries on as [`SoloEngine::run_from`]
    /// just after the last block's time, `time_scale` times faster than the wall clock. Ends when
    /// `shutdown` receives a message or its sender is dropped, or at a fatal error.
    pub fn run_driven(
        mut self,
        shutdown: Receiver<()>,
        ticks: Receiver<Tick>,
        mut on_block: impl FnMut(&Finalized, Duration),
    ) {
        let mut last_ms = 0;
        loop {
            match shutdown.try_recv() {
                Ok(()) | Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            let tick = match ticks.recv_timeout(Duration::from_millis(20)) {
                Ok(t) => t,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return self.run_from(shutdown, on_block, last_ms.max(1) + 1);
                }
            };
            let started = Instant::now();
            let result = self
                .app
                .propose(tick.timestamp_ms, self.cfg.proposer)
                .and_then(|block| self.app.finalize(&block));
            match result {
                Ok(f) => {
                    last_ms = f.timestamp_ms;
                    on_block(&f, started.elapsed());
                    let _ = tick.done.send(Ok(f.height));
                }
                Err(e) => {
                    let fatal = e.is_fatal();
                    tracing::error!(error = %e, fatal, "driven block failed");
                    let _ = tick.done.send(Err(e.to_string()));
                    if fatal {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridmesh_ledger::{Block, ChainError, Genesis};
    use gridmesh_types::Hash32;

    /// An application whose every block fails as scripted.
    struct Failing {
        fatal: bool,
        attempts: usize,
    }

    impl Application for Failing {
        fn propose(&mut self, _: u64, _: Address) -> Result<Block, AppError> {
            let (mut block, _) = Genesis::dev(Address([1; 32])).block().unwrap();
            block.header.height = 1;
            block.txs = vec![];
            Ok(block)
        }
        fn verify(&mut self, _: &Block) -> Result<(), AppError> {
            Ok(())
        }
        fn finalize(&mut self, _: &Block) -> Result<Finalized, AppError> {
            self.attempts += 1;
            Err(if self.fatal {
                AppError::IndexFailed {
                    height: 1,
                    source: ChainError::MissingBlock(1),
                }
            } else {
                AppError::Chain(ChainError::MissingBlock(1))
            })
        }
        fn has_pending(&self) -> bool {
            true
        }
        fn head(&self) -> (u64, Hash32) {
            (0, Hash32::default())
        }
    }

    fn engine(fatal: bool) -> SoloEngine<Failing> {
        SoloEngine::new(
            Failing { fatal, attempts: 0 },
            SoloConfig {
                block_interval: Duration::from_millis(10),
                empty_blocks: true,
                proposer: Address([1; 32]),
                time_scale: 1,
            },
        )
    }

    #[test]
    fn a_fatal_error_stops_the_engine_and_others_are_retried() {
        let (_keep, rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        engine(true).run(rx, |_, _| panic!("nothing commits"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stopped at the first fatal error"
        );

        // A failed commit (nothing changed) is reported as retryable, and the next step tries again.
        let mut e = engine(false);
        for _ in 0..3 {
            assert!(!e.step(0).unwrap_err().is_fatal());
        }
        assert_eq!(e.app.attempts, 3);
    }

    #[test]
    fn a_driven_engine_answers_every_tick_and_runs_on_its_own_when_the_driver_goes() {
        let (keep, shutdown) = std::sync::mpsc::channel();
        let (ticks, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || engine(false).run_driven(shutdown, rx, |_, _| {}));
        for t in [1_000, 2_000] {
            let (done, answer) = std::sync::mpsc::sync_channel(1);
            ticks
                .send(Tick {
                    timestamp_ms: t,
                    done,
                })
                .unwrap();
            let err = answer.recv().unwrap().unwrap_err();
            assert!(err.contains("missing"), "{err}");
        }
        // Without a driver it carries on on its own clock until shut down.
        drop(ticks);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!thread.is_finished());
        keep.send(()).unwrap();
        thread.join().unwrap();
    }
}
