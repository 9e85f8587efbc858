// conveyor.js: follow a conveyor job from the browser. No dependencies, no build step,
// nothing that a strict Content-Security-Policy forbids (no eval, no inline styles).
//
//   import { watchJob } from "/jobs/api/jobs/conveyor.js";
//
//   const stop = watchJob(42, {
//     onUpdate(status) {},  // the status route's answer, at once and on every change
//     onDone(status) {},    // once, when the job is completed, failed or cancelled
//     onError(error) {},    // once, {status, code, message}: 401, 404 (another tenant's
//                           // or an unknown job, or one deleted while watched), 403
//   });
//   stop();                 // stop watching (no callback is called after it)
//
// It listens to GET {basePath}/{id}/stream (Server-Sent Events) and, when EventSource is
// missing or its connection fails, polls GET {basePath}/{id} instead. basePath defaults
// to where this module was served from ({status_path}). Credentials: EventSource sends
// cookies only (no Authorization header), so the app's authenticate() must accept a
// cookie for browsers.

const FINISHED = new Set(["completed", "failed", "cancelled"]);
const HERE = new URL(".", import.meta.url);

/**
 * Watch job `id` until it finishes or `stop()` is called.
 *
 * @param {number|string} id the job id
 * @param {object} [options]
 * @param {(status: object) => void} [options.onUpdate] every new status
 * @param {(status: object) => void} [options.onDone] the final status
 * @param {(error: {status: number, code: string, message: string}) => void} [options.onError]
 * @param {string} [options.basePath] the status API's path, e.g. "/jobs/api/jobs"
 * @param {number} [options.pollInterval] milliseconds between polls (fallback), 2000
 * @param {boolean} [options.withCredentials] send cookies to another origin, false
 * @returns {() => void} stop
 */
export function watchJob(id, options = {}) {
  const {
    onUpdate,
    onDone,
    onError,
    basePath,
    pollInterval = 2000,
    withCredentials = false,
  } = options;
  const base =
    basePath === undefined || basePath === null
      ? HERE
      : new URL(String(basePath).replace(/\/*$/, "/"), HERE);
  const jobUrl = new URL(encodeURIComponent(String(id)), base);
  let stopped = false;
  let source = null;
  let timer = null;
  let controller = null;
  let last = null;

  function stop() {
    stopped = true;
    if (source !== null) source.close();
    if (timer !== null) clearTimeout(timer);
    if (controller !== null) controller.abort();
    source = timer = controller = null;
  }

  function call(callback, value) {
    if (typeof callback === "function") callback(value);
  }

  function update(status) {
    const text = JSON.stringify(status);
    if (stopped || text === last) return;
    last = text;
    call(onUpdate, status);
  }

  function finish(status) {
    if (stopped) return;
    update(status);
    stop();
    call(onDone, status);
  }

  function fail(error) {
    if (stopped) return;
    stop();
    call(onError, error);
  }

  function later() {
    if (!stopped) timer = setTimeout(poll, pollInterval);
  }

  async function poll() {
    timer = null;
    if (stopped) return;
    controller = new AbortController();
    let response;
    let body = null;
    try {
      response = await fetch(jobUrl, {
        headers: { Accept: "application/json" },
        credentials: withCredentials ? "include" : "same-origin",
        cache: "no-store",
        signal: controller.signal,
      });
      body = await response.json().catch(() => null);
    } catch (err) {
      later(); // the network, or stop(): try again (stop() cancels the retry)
      return;
    } finally {
      controller = null;
    }
    if (response.ok && body !== null) {
      if (FINISHED.has(body.state)) finish(body);
      else {
        update(body);
        later();
      }
    } else if (response.status >= 500 || body === null) {
      later(); // the store is unavailable for a moment
    } else {
      const error = (body && body.error) || {};
      fail({
        status: response.status,
        code: String(error.code || "http_error"),
        message: String(error.message || response.statusText),
      });
    }
  }

  function listen() {
    source = new EventSource(`${jobUrl.href}/stream`, { withCredentials });
    const data = (event) => JSON.parse(event.data);
    source.addEventListener("update", (event) => update(data(event)));
    source.addEventListener("done", (event) => finish(data(event)));
    source.addEventListener("gone", (event) =>
      fail({ status: 404, ...data(event).error }),
    );
    // A refused stream (401, 404) or a lost connection: the status route says why, or
    // carries on where the stream left off.
    source.onerror = () => {
      if (stopped || source === null) return;
      source.close();
      source = null;
      poll();
    };
  }

  if (typeof EventSource === "function") listen();
  else poll();
  return stop;
}
