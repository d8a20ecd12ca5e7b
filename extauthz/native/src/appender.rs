//! The decision log's appender: a thread that writes sealed bytes to the log file without the GIL.
//!
//! Python masks and seals every entry on the caller's thread (`extauthz.audit.writer`) and
//! hands the bytes here; with `audit.sync` the caller then waits for its ticket with the GIL
//! released.  A Python writer thread cost each decision two GIL hand-offs and two thread
//! wake-ups (~95 µs of CPU, docs/performance.md); this thread needs no GIL at all.
//!
//! The guarantees are the Python appender's (`extauthz.audit.appender.ThreadAppender`):
//! bytes are written in ticket order, all of them (a failed write keeps the rest and retries
//! with backoff, reporting the error until a write succeeds), fsync'ed when asked, and a
//! waiter gives up after its timeout or as soon as a write fails, so a stalled or full disk
//! fails the call closed instead of holding it.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum Command {
    /// Append `data`; fsync after it when `sync`.
    Write { data: Vec<u8>, sync: bool },
    /// Close the file, rename it to `rotated` and start a new one with `header`.
    Rotate { rotated: PathBuf, header: Vec<u8> },
    Stop,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(u64, Command)>,
    issued: u64,
    written: u64,
    /// The errno of the last failed write while writes fail; None once one succeeds.
    failing: Option<i32>,
    errors: u64,
    /// The Stop command is queued: nothing more is taken.
    stopping: bool,
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for commands; appenders for room in the queue.
    work: Condvar,
    /// Waiters for their tickets, and for errors.
    progress: Condvar,
    /// The housekeeping thread, for errors and the stop only: woken by every write, it would
    /// cost each synchronous decision another thread wake-up.
    events: Condvar,
    capacity: usize,
    retry: Duration,
}

/// Where the bytes go: the log file (opened on first use, reopened after a rotation) or a
/// duplicate of the process's standard output.
struct Target {
    path: Option<PathBuf>,
    file: Option<File>,
}

impl Target {
    fn file(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            self.file = Some(match &self.path {
                Some(path) => OpenOptions::new().append(true).create(true).open(path)?,
                None => {
                    // SAFETY: fd 1 stays open for the life of the process; it is only borrowed
                    // to duplicate it.
                    let stdout = unsafe { std::os::fd::BorrowedFd::borrow_raw(1) };
                    File::from(stdout.try_clone_to_owned()?)
                }
            });
        }
        Ok(self.file.as_mut().expect("opened above"))
    }
}

impl Shared {
    /// Run `attempt` until it succeeds, reporting each failure and backing off: nothing is
    /// dropped, and waiters are woken to give up while the log cannot be written.
    fn until_done(&self, target: &mut Target, mut attempt: impl FnMut(&mut Target) -> std::io::Result<()>) {
        let mut delay = self.retry;
        loop {
            match attempt(target) {
                Ok(()) => return,
                Err(err) => {
                    {
                        let mut state = self.state.lock().unwrap();
                        state.failing = Some(err.raw_os_error().unwrap_or(5)); // EIO when the OS gave none
                        state.errors += 1;
                    }
                    self.progress.notify_all();
                    self.events.notify_all();
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn write_all(&self, target: &mut Target, data: &[u8], sync: bool) {
        let mut offset = 0;
        let to_disk = target.path.is_some(); // standard output is not fsync'ed
        self.until_done(target, |target| {
            let file = target.file()?;
            while offset < data.len() {
                match file.write(&data[offset..]) {
                    Ok(0) => return Err(std::io::Error::from_raw_os_error(28)), // ENOSPC: nothing taken
                    Ok(n) => offset += n,
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(err) => return Err(err),
                }
            }
            if sync && to_disk {
                match file.sync_all() {
                    // A pipe or a character device cannot be synced: what was written is all there is.
                    Err(err) if err.raw_os_error() == Some(22) => {}
                    other => other?,
                }
            }
            Ok(())
        });
    }

    fn rotate(&self, target: &mut Target, rotated: &PathBuf, header: &[u8]) {
        target.file = None; // closed: the checkpoint before it was fsync'ed
        if let Some(path) = target.path.clone() {
            self.until_done(target, |_| match std::fs::rename(&path, rotated) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            });
        }
        self.write_all(target, header, false);
    }

    fn run(&self, mut target: Target) {
        loop {
            let batch: Vec<(u64, Command)> = {
                let mut state = self.state.lock().unwrap();
                while state.queue.is_empty() {
                    state = self.work.wait(state).unwrap();
                }
                let batch = state.queue.drain(..).collect();
                self.work.notify_all(); // room for blocked appenders
                batch
            };
            let (mut pending, mut last, mut stop) = (Vec::new(), 0, false);
            for (ticket, command) in batch {
                match command {
                    Command::Write { data, sync } => {
                        pending.extend_from_slice(&data);
                        if sync {
                            // The tickets before this one wait for their bytes, not for the fsync.
                            self.write_all(&mut target, &pending, false);
                            pending.clear();
                            self.publish(ticket - 1, false);
                            self.write_all(&mut target, &[], true);
                        }
                    }
                    Command::Rotate { rotated, header } => {
                        self.write_all(&mut target, &pending, false);
                        pending.clear();
                        self.rotate(&mut target, &rotated, &header);
                    }
                    Command::Stop => stop = true,
                }
                last = ticket;
            }
            if !pending.is_empty() {
                self.write_all(&mut target, &pending, false);
            }
            self.publish(last, stop);
            if stop {
                return;
            }
        }
    }

    /// Everything up to `written` is written (and writes succeed again): wake its waiters.
    fn publish(&self, written: u64, stop: bool) {
        {
            let mut state = self.state.lock().unwrap();
            state.written = state.written.max(written);
            state.failing = None;
            state.stopped |= stop;
        }
        self.progress.notify_all();
        if stop {
            self.events.notify_all();
        }
    }
}

/// ``FileAppender(path, retry_s, capacity)``: appends to ``path`` (standard output when
/// None) from its own thread.  Every method that waits releases the GIL.
#[pyclass(module = "aegis_grpc_front", frozen)]
pub struct FileAppender {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl FileAppender {
    /// Queue `command`: its ticket, or None when the queue is full and `wait_for_room` is false.
    fn push(&self, py: Python<'_>, command: Command, wait_for_room: bool) -> PyResult<Option<u64>> {
        py.detach(|| {
            let mut state = self.shared.state.lock().unwrap();
            let stop = matches!(command, Command::Stop); // needs no room: a stuck disk must not hold close()
            while !stop && state.queue.len() >= self.shared.capacity && !state.stopping {
                if !wait_for_room {
                    return Ok(None);
                }
                state = self.shared.work.wait(state).unwrap();
            }
            if state.stopping {
                return Err(PyRuntimeError::new_err("the decision log's appender is closed"));
            }
            state.stopping = stop;
            state.issued += 1;
            let ticket = state.issued;
            state.queue.push_back((ticket, command));
            drop(state);
            self.shared.work.notify_all();
            Ok(Some(ticket))
        })
    }
}

#[pymethods]
impl FileAppender {
    #[new]
    #[pyo3(signature = (path, retry_s = 0.05, capacity = 10_000))]
    fn new(path: Option<PathBuf>, retry_s: f64, capacity: usize) -> PyResult<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
            events: Condvar::new(),
            capacity: capacity.max(1),
            retry: Duration::from_secs_f64(retry_s.max(0.001)),
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("aegis-decision-log".into())
            .spawn(move || writer.run(Target { path, file: None }))?;
        Ok(FileAppender { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Queue ``data`` (fsync'ed after it when ``sync``): its ticket, or None when the queue
    /// is full and not ``wait_for_room``.
    fn append(&self, py: Python<'_>, data: &[u8], sync: bool, wait_for_room: bool) -> PyResult<Option<u64>> {
        // `&[u8]`, one copy: a `Vec<u8>` argument is extracted item by item (~30 µs per line).
        self.push(py, Command::Write { data: data.to_vec(), sync }, wait_for_room)
    }

    /// After what is queued: close the file, rename it ``rotated``, write ``header`` to a new
    /// one; as ``append``.
    fn rotate(&self, py: Python<'_>, rotated: PathBuf, header: &[u8], wait_for_room: bool) -> PyResult<Option<u64>> {
        self.push(py, Command::Rotate { rotated, header: header.to_vec() }, wait_for_room)
    }

    /// True once ``ticket`` is written; False after ``timeout`` seconds or while writes fail.
    fn wait(&self, py: Python<'_>, ticket: u64, timeout: f64) -> bool {
        py.detach(|| {
            let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
            let mut state = self.shared.state.lock().unwrap();
            loop {
                if state.written >= ticket {
                    return true;
                }
                let now = Instant::now();
                if state.failing.is_some() || now >= deadline {
                    return false;
                }
                state = self.shared.progress.wait_timeout(state, deadline - now).unwrap().0;
            }
        })
    }

    /// Block until more is written than ``written`` (None: writes do not wake this waiter) or
    /// more writes failed than ``errors``, at most ``timeout`` seconds; then `state`.
    #[pyo3(signature = (written, errors, timeout))]
    fn wait_progress(
        &self,
        py: Python<'_>,
        written: Option<u64>,
        errors: u64,
        timeout: f64,
    ) -> (u64, u64, Option<i32>, usize) {
        let condvar = if written.is_some() { &self.shared.progress } else { &self.shared.events };
        let written = written.unwrap_or(u64::MAX);
        py.detach(|| {
            let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
            let mut state = self.shared.state.lock().unwrap();
            loop {
                let now = Instant::now();
                if state.written > written || state.errors > errors || state.stopped || now >= deadline {
                    return (state.written, state.errors, state.failing, state.queue.len());
                }
                state = condvar.wait_timeout(state, deadline - now).unwrap().0;
            }
        })
    }

    /// ``(last ticket written, failed writes so far, errno while failing or None, queued)``.
    fn state(&self) -> (u64, u64, Option<i32>, usize) {
        let state = self.shared.state.lock().unwrap();
        (state.written, state.errors, state.failing, state.queue.len())
    }

    /// Write what is queued and stop the thread, waiting up to ``timeout`` seconds; False if
    /// it did not finish (the disk is failing).
    fn close(&self, py: Python<'_>, timeout: f64) -> bool {
        if self.push(py, Command::Stop, true).is_err() {
            return true; // closed already
        }
        let finished = py.detach(|| {
            let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
            let mut state = self.shared.state.lock().unwrap();
            while !state.stopped {
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                state = self.shared.progress.wait_timeout(state, deadline - now).unwrap().0;
            }
            true
        });
        if finished {
            if let Some(thread) = self.thread.lock().unwrap().take() {
                let _ = py.detach(|| thread.join());
            }
        }
        finished
    }
}
