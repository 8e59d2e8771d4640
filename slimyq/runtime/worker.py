"""One worker process serving one queue with N jobs in flight (N threads, or N forked children).

The main thread claims jobs (``CLAIM`` script: pop + mark started + register, atomically) only
for free slots, blocking on ``BLMOVE`` into this worker's own claim list when the queue is empty.
Executor threads run jobs; a completer thread writes outcomes in batches (``COMPLETE``); a
heartbeat thread keeps this worker's started-registry entries alive and recovers other workers'
abandoned ones. Every Redis call survives an outage by waiting and retrying.

Shutdown: the first SIGTERM stops claiming, lets running jobs finish within the grace period,
puts anything not finished back at the front of the queue and exits 0. A second SIGTERM (or
SIGUSR1) exits at once; the supervisor then puts the jobs back.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue as queue_mod
import signal
import threading
import time
from typing import Any

import redis

from slimyq.config import Settings
from slimyq.jobs.base import JobContext
from slimyq.logs import event
from slimyq.runtime import codec, execute, joblog, keys
from slimyq.runtime.batchrun import BatchRunner
from slimyq.runtime.codec import ClaimedJob
from slimyq.runtime.commands import Commands
from slimyq.runtime.completer import Completer
from slimyq.runtime.dbhandle import JobDatabase
from slimyq.runtime.durations import Durations, InARow
from slimyq.runtime.execute import JobStopped, JobTimeout, Result
from slimyq.runtime.presence import Presence, record_ttl, release, release_members
from slimyq.runtime.scripts import Scripts
from slimyq.runtime.timeouts import Watchdog

log = logging.getLogger("slimyq.worker")

EXIT_OK = 0
EXIT_RESTART = 3  # asks the supervisor for a fresh process (threads stuck past their timeout)
EXIT_HARD = 4  # stopped at once on a second signal: the supervisor puts the jobs back
EXIT_UNWRITTEN = 5  # job outcomes could not be written: the supervisor charges those jobs an attempt
RECONCILE_EVERY = 5.0  # seconds between checks for claims whose reply was lost
GATHER = 0.001  # seconds a claim waits for half the slots to be free while short jobs run...
GATHER_UNDER = 0.002  # ...jobs that took less than this, on average (Durations.overall)


class QueueWorker:
    def __init__(
        self,
        settings: Settings,
        queue: str,
        *,
        concurrency: int,
        burst: bool = False,
        max_jobs: int | None = None,
        fork: bool = False,
        name: str | None = None,
        conn: redis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.qs = settings.queue(queue)
        self.concurrency = concurrency
        self.burst = burst
        self.max_jobs = max_jobs
        self.fork = fork
        self.name = name or f"slimyq.{os.uname().nodename}.{os.getpid()}.{queue}"
        self._conn = conn
        self.stopping = threading.Event()  # no more claims (a signal, --max-jobs reached, burst done)
        self.stop_requested_at: float | None = None  # a signal (or a restart) asked us to stop
        self.hard = threading.Event()
        self.exit_code = EXIT_OK
        self.lock = threading.Condition()
        self._busy = 0
        self._claimed = 0
        self.inflight: dict[str, ClaimedJob] = {}  # member -> job, until its completion is written
        self._todo: queue_mod.SimpleQueue[ClaimedJob | list[ClaimedJob] | InARow | None] = queue_mod.SimpleQueue()
        self._running: dict[str, int] = {}  # members whose handler runs right now -> watch token (0: none yet)
        self._stuck: set[str] = set()  # members whose thread ignored its timeout (they keep their slot)
        self._queued: set[str] = set()  # members claimed and not started yet
        self._uncommitted: set[str] = set()  # ran in a batch whose transaction has not ended yet, or in a row
        self._row_ended: dict[int, list[tuple[ClaimedJob, Result]]] = {}  # a row's thread -> ended, not handed over
        self._taken: set[str] = set()  # members a recovery took from us while we lapsed: not ours to run
        self._seq = itertools.count(time.time_ns() // 1000)  # execution ids sort in claim order
        self._claim_unsure = False  # a claim's reply was lost: Redis may hold claims we don't know
        self._claim_list = True  # our claim list may hold ids (a BLMOVE since the last claim, a process before us)
        self.durations = Durations()  # how long jobs take here (see GATHER and InARow)
        self._wake_free = 1  # free slots the fetch thread waits for: a job's end below that wakes no one
        self.db = JobDatabase(settings)
        self.watchdog = Watchdog()
        self.batches = BatchRunner(self)
        self.max_size = settings.worker.max_job_size

    # ------------------------------------------------------------------ setup

    @property
    def conn(self) -> redis.Redis:
        if self._conn is None:
            from slimyq.redis import connect

            self._conn = connect(self.settings)
        return self._conn

    def database(self) -> Any:
        return self.db.get()

    @property
    def busy(self) -> int:
        """Jobs claimed and not yet finished running (the slots in use)."""
        return self._busy

    def _context(self, job: ClaimedJob) -> JobContext:
        return JobContext(job.id, self.queue, job.attempt, self.settings, db_factory=self.database)

    def install_signals(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches the supervisor
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGUSR1, lambda *_: self._stop_hard())

    def _on_term(self, *_: object) -> None:
        if self.stop_requested_at is not None:
            self._stop_hard()
        self.request_stop()

    def request_stop(self) -> None:
        """Stop claiming; running jobs get ``shutdown_grace``; jobs not started yet go back."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        self.stopping.set()
        with self.lock:
            self.lock.notify_all()

    def _stop_hard(self) -> None:
        self.hard.set()
        os._exit(EXIT_HARD)

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        self.scripts = Scripts(self.conn)
        self.presence = Presence(self.conn, self.settings, self.queue, self.name, self)
        self.presence.register()
        joblog.bind(self.name, self.queue, self.concurrency, [self.settings.chat.api_key])
        self.watchdog.start()
        for i in range(self.concurrency):
            self._spawn_executor(i)
        self.completer = Completer(self)
        self.completer.start()
        self.commands = Commands(self)
        self.commands.start()
        self.presence.start()
        try:
            self._fetch_loop()
        finally:
            self._drain()
        event(log, logging.INFO, "worker.stop", f"worker {self.name} stopped", worker=self.name,
              queue=self.queue, exit_code=self.exit_code, jobs=self._claimed)
        return self.exit_code

    def _spawn_executor(self, index: int) -> None:
        threading.Thread(target=self._execute_loop, name=f"slimyq-exec-{index}", daemon=True).start()

    def _fetch_loop(self) -> None:
        promote_at = 0.0
        reconcile_at = time.monotonic() + RECONCILE_EVERY
        errors = 0
        while not self.stopping.is_set():
            if self.max_jobs is not None and self._claimed >= self.max_jobs:
                break
            if not self.completer.alive:  # it asked for the stop itself (see Completer._run)
                self.exit_code = EXIT_UNWRITTEN
                break
            free = self._free_slots()
            if free <= 0:
                continue
            if self.max_jobs is not None:
                free = min(free, self.max_jobs - self._claimed)
            now = time.time()
            promote = now >= promote_at
            try:
                if self._claim_unsure or time.monotonic() >= reconcile_at:
                    # redis-py retries a command whose connection broke, so a claim can run twice
                    # with the first reply lost and no error seen here: check now and then.
                    self._release_orphans()
                    reconcile_at = time.monotonic() + RECONCILE_EVERY
                paused, jobs = self._claim(free, promote, now)
                if promote:
                    promote_at = now + 1.0
                if jobs:
                    self._dispatch(jobs)
                elif paused:
                    self.stopping.wait(0.5)
                elif self.burst:
                    if self._idle() and not self._scheduled_soon():
                        break
                    self.stopping.wait(0.1)
                else:
                    self._claim_list = True  # even if the reply is lost
                    self.conn.blmove(keys.queue(self.queue), keys.claim_list(self.name), 1, "LEFT", "RIGHT")
                if errors:
                    self.redis_back(errors)  # the reconnect is an event
                errors = 0
            except redis.RedisError as exc:
                # The claim may have run on the server with its reply lost (the connection broke,
                # or the client retried it): its jobs would sit started, owned by us, unknown to us.
                self._claim_unsure = True
                errors += 1
                self.wait_for_redis(exc, errors)

    def _free_slots(self) -> int:
        """The slots to claim for now (0: none free, after waiting up to 0.5 s for one). A slot or
        two free while short jobs run: more free in a moment, and claiming them together costs one
        claim instead of several, so wait up to ``GATHER`` for half of them (long jobs: at once)."""
        with self.lock:
            free = self.concurrency - self._busy
            if free <= 0:
                self.lock.wait(0.5)
                return 0
            until = time.monotonic() + (GATHER if self.durations.overall < GATHER_UNDER else 0.0)
            self._wake_free = self.concurrency // 2
            try:
                while free < self.concurrency // 2 and self._busy and (left := until - time.monotonic()) > 0:
                    self.lock.wait(left)
                    free = self.concurrency - self._busy
            finally:
                self._wake_free = 1
            return free

    def _release_orphans(self) -> None:
        """Put back jobs Redis says we hold but we never received (a claim whose reply was lost)."""
        from slimyq.runtime.presence import release_orphans

        with self.lock:
            known = set(self.inflight)
        released = release_orphans(self.conn, self.settings, self.queue, self.name, known)
        if released:
            event(log, logging.WARNING, "jobs.released",
                  f"put back {len(released)} job(s) claimed while the connection to Redis broke",
                  worker=self.name, queue=self.queue, count=len(released))
        self._claim_unsure = False

    def wait_for_redis(self, exc: Exception, errors: int) -> None:
        if errors == 1:
            event(log, logging.WARNING, "redis.lost", f"lost Redis ({exc}); retrying", worker=self.name,
                  queue=self.queue, error_type=type(exc).__name__, error=joblog.one_line(str(exc)))
        self.stopping.wait(min(0.2 * 2 ** min(errors, 5), 5.0))

    def redis_back(self, errors: int) -> None:
        event(log, logging.INFO, "redis.reconnected", f"Redis is back after {errors} failed call(s)",
              worker=self.name, queue=self.queue, failed_calls=errors)

    def _idle(self) -> bool:
        with self.lock:
            return self._busy == 0 and not self.inflight

    def _scheduled_soon(self) -> bool:
        return bool(self.conn.zcount(keys.scheduled(self.queue), "-inf", time.time() + 60))

    def _claim(self, n: int, promote: bool, now: float) -> tuple[bool, list[ClaimedJob]]:
        salt = os.urandom(3 * n).hex()  # one read of the kernel's random bytes per claim, not per job
        eids = [f"{next(self._seq):014x}{salt[6 * i:6 * i + 6]}" for i in range(n)]
        deadline = int(now + self.settings.worker.abandoned_after)
        reply: Any = self.scripts.claim(
            args=[self.queue, self.name, n, f"{now:.6f}", codec.rq_now(), deadline, int(promote),
                  record_ttl(self.settings), int(self._claim_list), *eids]
        )
        self._claim_list = False
        paused = bool(int(reply[0][0])) if isinstance(reply[0], list) else bool(int(reply[0]))
        jobs = []
        for row in reply[1:]:
            # Ids are bytes in Redis and need not be UTF-8: such a job is claimed and refused.
            job_id, eid = codec.text_id(row[0]), codec.text_id(row[1])
            if not eid:  # the key is not a hash: nothing to run or to fail
                log.error("dropped %r from %s: its key is not a job hash", codec.printable(job_id), self.queue)
                continue
            raw = dict(zip(codec.CLAIM_FIELDS, row[2:], strict=False))
            jobs.append(ClaimedJob(job_id, eid, raw))
        return paused, jobs

    def _dispatch(self, jobs: list[ClaimedJob]) -> None:
        with self.lock:
            self._busy += len(jobs)
            self._claimed += len(jobs)
            for job in jobs:
                self.inflight[job.member] = job
                self._queued.add(job.member)
        if self.qs.batch_transaction and not self.fork:
            items: list[ClaimedJob | InARow] = list(self.batches.dispatch(jobs))  # batches: their own rules
        else:
            items = list(jobs) if self.fork else self.durations.arrange(jobs)
        for item in items:
            self._todo.put(item)

    # ------------------------------------------------------------------ executing

    def _execute_loop(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            if isinstance(item, list):
                self.batches.execute(item)
            elif isinstance(item, InARow):
                self._run_row(item.jobs)
            elif self._begin(item):
                self._end(item, self._attempt(item))
            self.batches.measure()  # between two jobs, on the connection this thread just used

    def _run_row(self, jobs: list[ClaimedJob]) -> None:
        """Jobs of short types one after the other (:mod:`slimyq.runtime.durations`); their outcomes
        are handed over together when the row ends (one lock, one hand-over, one wake-up of the
        claim for the row instead of one per job), or sooner by :meth:`_drain`. A job that ended
        waits for that as a batch's job waits for the commit: no longer running (a stop-job does
        not reach it), not to be put back."""
        me = threading.get_ident()
        for job in jobs:
            if self._begin(job):
                result = self._attempt(job)
                with self.lock:
                    self._running.pop(job.member, None)
                    self._uncommitted.add(job.member)
                    self._row_ended.setdefault(me, []).append((job, result))
        self._hand_over_rows(me)

    def _hand_over_rows(self, thread: int | None = None) -> None:
        """Hand over what ended in ``thread``'s row, or (None) in every row: while the worker
        stops, a job still running (or stuck) later in its row must not hold them back."""
        with self.lock:
            threads = list(self._row_ended) if thread is None else [thread]
            done = [item for t in threads for item in self._row_ended.pop(t, [])]
            if done:
                self._end_all(done)

    def _begin(self, job: ClaimedJob) -> bool:
        """Mark the job running; False if it must not start (stopping, or taken over)."""
        member = job.member
        with self.lock:
            self._queued.discard(member)
            skip = self.stop_requested_at is not None or member in self._taken
            if skip:  # not started: released back to the queue when we exit (or not ours)
                self._busy -= 1
                if member in self._taken:
                    self._taken.discard(member)
                    self.inflight.pop(member, None)
                self.lock.notify_all()
            else:
                self._running[member] = 0
        return not skip

    def _attempt(self, job: ClaimedJob) -> Result:
        """Run a started job; never raises."""
        started = time.time()
        try:
            result = self._run_one(job)
        except BaseException as exc:
            result = Result(ok=False, error_type="crashed", error=f"worker error: {exc!r}", started=started,
                            ended=time.time())
        if result.job_type == execute.UNKNOWN_TYPE:  # timed out or crashed outside execute.run (fork mode)
            result.job_type = execute.job_type_of(job)
            result.user = result.user or execute.user_of(job)
        return result

    def _end(self, job: ClaimedJob, result: Result) -> None:
        self._end_all([(job, result)])

    def _end_all(self, outcomes: list[tuple[ClaimedJob, Result]]) -> None:
        """Hand the outcomes to the completer, together (a transaction's, in claim order: they are
        written in one call, so jobs put back at the front of the queue keep that order), and free
        their slots (a job another worker took over while it waited for its batch's commit is that
        worker's to report: only the slot is freed)."""
        with self.lock:
            handed: list[tuple[ClaimedJob, Result]] = []
            for job, result in outcomes:
                self.durations.ended(execute.job_type_of(job), result)
                member = job.member
                self._running.pop(member, None)
                self._uncommitted.discard(member)
                result = self.commands.outcome(member, result)
                self._stuck.discard(member)  # it did stop after all: its outcome is written as usual
                if member in self._taken:
                    self._taken.discard(member)
                    self.inflight.pop(member, None)
                else:
                    handed.append((job, result))
                self._busy -= 1
            if handed:
                self.completer.put(handed)
            if self.concurrency - self._busy >= self._wake_free or not self._busy or self.stopping.is_set():
                self.lock.notify_all()  # only the fetch thread waits on it (_free_slots, _drain)

    def restart(self, why: str) -> None:
        """Something this process runs ignored its timeout and cannot be stopped from here: ask
        the supervisor for a fresh process (running jobs get the shutdown grace, the rest go back)."""
        log.error("%s; restarting this worker process", why)
        self.exit_code = EXIT_RESTART
        self.request_stop()

    def _run_one(self, job: ClaimedJob) -> Result:
        timeout = float(job.timeout(self.qs.timeout))
        if self._stop_requested(job):
            return Result(ok=False, error_type="stopped", error="stopped on request before it started",
                          started=time.time(), ended=time.time())
        if self.fork:
            from slimyq.runtime.forked import run_in_child

            # A stop-job landing from here until the fork is seen by forked(): the child is killed.
            return run_in_child(lambda: execute.run(job, self.queue, self._context, self.max_size), timeout,
                                on_fork=lambda pid: self.commands.forked(job.member, pid))
        started = time.time()
        token = self.watchdog.watch(timeout, lambda: self._on_stuck(job, started, timeout))
        with self.lock:  # what a stop-job or a takeover expires: this watch, not the thread's next one
            if job.member in self._running:
                self._running[job.member] = token
            stop = job.member in self.commands.stopped  # a stop-job that came just before the watch
        try:
            if stop:
                self.watchdog.expire(token, JobStopped)
            result = execute.run(job, self.queue, self._context, self.max_size)
        except JobTimeout:
            result = Result(ok=False, error_type="timeout", started=started, ended=time.time())
        finally:
            timed_out = self.watchdog.release(token)
        if timed_out:
            # The timeout was raised into this thread wherever it was: inside the database layer it
            # may have left a transaction open or the SQLite writer lock held. Clean up before the
            # thread takes its next job.
            from slimyq.db.sqlite import release_thread_locks

            if release_thread_locks():
                log.warning("job %s timed out inside a database transaction; rolled back", codec.printable(job.id))
            result.interrupted = True  # even if the handler caught it and failed otherwise
            if result.error_type == "timeout":
                result.error = f"job exceeded its timeout of {timeout:g} s"
        if result.infra and result.error_type == codec.INFRA_ERROR:
            self.db.reset()
        return result

    def _on_stuck(self, job: ClaimedJob, started: float, timeout: float) -> None:
        """A thread ignored JobTimeout (a long C call, a query blocked on a lock). It cannot be
        stopped from here, and handing its job back while it runs would let a second attempt
        overlap the first. So the job keeps its slot (and its heartbeat) and this process
        restarts: running jobs get the shutdown grace, the rest go back, and the supervisor
        retries the stuck job once the process, and with it the thread, is gone."""
        with self.lock:
            if job.member not in self._running:
                return  # it stopped after all, and its outcome is on its way
            self._stuck.add(job.member)
        self.restart(f"job {codec.printable(job.id)} ran past its timeout of {timeout:g} s and its thread does "
                     "not stop (the job is retried once this process is gone)")

    def _stop_requested(self, job: ClaimedJob) -> bool:
        """A stop-job came after the job was marked running and before its handler started (it
        names running jobs only, so it found no watch or process to stop yet)."""
        with self.lock:
            return job.member in self.commands.stopped

    def running_members(self) -> list[str]:
        return list(self._running)

    def waiting_members(self) -> list[str]:
        """Claimed here, not started yet (waiting for a job thread, in a row or a batch)."""
        return list(self._queued)

    def thread_of(self, member: str) -> int | None:
        """The watch token of the member's running attempt (None: not running, or not watched yet)."""
        return self._running.get(member) or None

    def taken_over(self, members: list[str]) -> None:
        """The heartbeat found executions we hold recovered by another worker (we lapsed: a stall
        longer than ``abandoned_after``). They run elsewhere now: ones not started are skipped,
        running ones are stopped like a timeout (a thread that ignores it restarts the process)."""
        with self.lock:
            # Only what has not ended here: a job that just completed is missing from the started
            # registry for that reason.
            mine = [m for m in members if m in self._running or m in self._queued or m in self._uncommitted]
            # Not started, or ran in a batch not committed yet: the batch's commit is called off.
            self._taken.update(m for m in mine if m in self._queued or m in self._uncommitted)
            running = [self._running[m] for m in mine if m in self._running]
        if mine:
            event(log, logging.WARNING, "jobs.taken_over", f"{len(mine)} job(s) were recovered by another worker "
                  "while this one was stalled; stopping them here", worker=self.name, queue=self.queue, count=len(mine))
        for token in running:
            if token:
                self.watchdog.expire(token)
        for m in mine:  # --fork: the job's own process
            pid = self.commands.children.get(m)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------------ stopping

    def _drain(self) -> None:
        """Finish what runs (within the grace period once a stop was requested; --max-jobs and
        --burst wait for their jobs), write every outcome, put back what was not run."""
        self.stopping.set()
        grace = self.settings.worker.shutdown_grace
        with self.lock:
            while True:
                self._hand_over_rows()
                # Once stopping, a job that has not started does not keep us (one waiting in a row
                # behind a stuck job would never start): it goes back below.
                waiting = len(self._queued) if self.stop_requested_at is not None else 0
                if self._busy - waiting <= len(self._stuck):
                    break
                asked = self.stop_requested_at
                if asked is not None and time.monotonic() >= asked + grace:
                    break
                self.lock.wait(0.2)
            running = self._busy - waiting
        # The completer writes everything handed over, then stops; the job history is flushed.
        self.completer.close(timeout=5.0 + (grace if self.stop_requested_at is not None else 60.0))
        for _ in range(self.concurrency):
            self._todo.put(None)
        self.presence.stop()
        self.commands.close()
        if self.completer.failed:
            # Outcomes were lost: those jobs stay held here, and the supervisor charges each an
            # attempt once this process is gone (a batch that always fails to be written ends up
            # failed instead of running forever). Jobs that never started go back now.
            self.exit_code = EXIT_UNWRITTEN
            with self.lock:
                unstarted = [m for m in self.inflight if m not in self._running and m not in self._uncommitted
                             and m not in self.completer.unwritten]
            log.error("%d job outcome(s) could not be written; the supervisor retries those jobs",
                      len(self.completer.unwritten))
            with contextlib.suppress(redis.RedisError):
                release_members(self.conn, self.settings, self.queue, self.name, unstarted)
        elif running:
            # Jobs still running (past the grace period, or stuck): putting them back now would let
            # another worker start them while they still run here. This process exits first; the
            # supervisor puts them back once it is gone. Jobs that never started go back now.
            log.warning("%d job(s) still running after %gs; the supervisor puts them back", running, grace)
            with self.lock:  # the completer has written (and forgotten) what ended
                unstarted = [m for m in self.inflight if m not in self._running and m not in self._uncommitted
                             and m not in self.completer.unwritten]  # ran: ended after the close
            with contextlib.suppress(redis.RedisError):  # else the supervisor puts them back too
                release_members(self.conn, self.settings, self.queue, self.name, unstarted)
        else:
            try:
                release(self.conn, self.settings, self.queue, self.name)
                self.presence.unregister()
            except redis.RedisError as exc:
                log.warning("could not put jobs back on %s (%s); they are recovered as abandoned", self.queue, exc)
        self.watchdog.stop()
