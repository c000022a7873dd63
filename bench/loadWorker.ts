// Runs localcloud/load.ts's openLoop in a worker thread, so that the evenly spaced requests
// keep their schedule while the main thread is busy running the Pulumi program (a release).
// Started by loadWindow.ts with workerData; posts {type: "started", at} then {type: "done", outcomes}.
import { parentPort, workerData } from "worker_threads";
import { appVersion, openLoop } from "../localcloud/load";

export interface LoadJob {
  host: string;
  address: string;
  ca: string;
  path: string;
  rate: number;
  seconds: number;
  keepAlive: boolean;
  timeoutMs: number;
}

const job = workerData as LoadJob;
const port = parentPort;
if (!port) throw new Error("loadWorker.ts runs only as a worker thread");

port.postMessage({ type: "started", at: Date.now() });
openLoop(
  { host: job.host, address: job.address, ca: job.ca, path: job.path, marker: appVersion },
  job.rate, job.seconds, { keepAlive: job.keepAlive, timeoutMs: job.timeoutMs },
).then(
  (outcomes) => port.postMessage({ type: "done", outcomes }),
  (e: unknown) => port.postMessage({ type: "error", error: String(e) }),
);
