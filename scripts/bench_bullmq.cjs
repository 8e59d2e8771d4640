// BullMQ beside slimyq for scripts/bench.py (same private Valkey, same N, in the same run).
//   node bench_bullmq.cjs fill PORT N            addBulk N trivial jobs (chunks of 1,000), prints the seconds
//   node bench_bullmq.cjs work PORT N C SLEEP_MS  a Worker at concurrency C until N jobs completed;
//                                                 prints JSON: seconds (first job started to last done), cpu_ms
// The jobs are the trivial job of the bench (validate a message) or, with SLEEP_MS > 0, a sleep.
// Retention matches slimyq's defaults: the newest 50 completed and 100 failed jobs are kept.
"use strict";
const { Queue, Worker } = require("bullmq");

const [mode, port, n, concurrency, sleepMs] = process.argv.slice(2);
const connection = { host: "127.0.0.1", port: Number(port), maxRetriesPerRequest: null };
const total = Number(n);
const retention = { removeOnComplete: { count: 50 }, removeOnFail: { count: 100 } };

function validate(message) {
  const content = String(message.content ?? "").trim();
  if (!content) throw new Error("Message content is required");
  return { success: true, validatedMessage: { role: message.role, content } };
}

async function fill() {
  const queue = new Queue("bench", { connection });
  const start = process.hrtime.bigint();
  for (let i = 0; i < total; i += 1000) {
    const jobs = [];
    for (let j = i; j < Math.min(total, i + 1000); j++) {
      jobs.push({ name: "validate", data: { message: { role: "user", content: `  hello ${j}  ` } }, opts: retention });
    }
    await queue.addBulk(jobs);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await queue.close();
  console.log(JSON.stringify({ seconds }));
}

async function work() {
  const pause = Number(sleepMs);
  let done = 0;
  let first = null;
  let cpuFirst = null;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const worker = new Worker("bench", async (job) => {
    if (first === null) { first = process.hrtime.bigint(); cpuFirst = process.cpuUsage(); }
    if (pause > 0) await new Promise((resolve) => setTimeout(resolve, pause));
    return validate(job.data.message);
  }, { connection, concurrency: Number(concurrency) });
  worker.on("completed", () => {
    done += 1;
    if (done === total) finish();
  });
  await finished;
  const seconds = Number(process.hrtime.bigint() - first) / 1e9;
  const cpu = process.cpuUsage(cpuFirst);
  await worker.close();
  console.log(JSON.stringify({ seconds, cpu_ms: (cpu.user + cpu.system) / 1000 / total }));
}

(mode === "fill" ? fill() : work()).then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
