// The API as the page uses it: JSON requests with the API key (when one is set), and the
// job's server-sent events read with fetch(), because EventSource cannot send the
// Authorization header. No dependency, no build step.

export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

export class ApiError extends Error {
  // details: [{field, message}], one per cause when the service names them (a 422 lists every one).
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  // The service answers every error as {"error": {"code", "message", "details"}}.
  static async from(response) {
    let code = "http_error";
    let message = `${response.status} ${response.statusText}`;
    let details = [];
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
        if (Array.isArray(body.error.details)) details = body.error.details.filter((d) => d && d.message);
      }
    } catch {
      // not JSON: keep the status line
    }
    return new ApiError(response.status, code, message, details);
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });

export class Api {
  // getKey() returns the API key to send, or "" for none (development mode).
  constructor(getKey) {
    this.getKey = getKey;
  }

  headers(extra = {}) {
    const headers = new Headers(extra);
    const key = this.getKey();
    if (key) headers.set("Authorization", `Bearer ${key}`);
    return headers;
  }

  async request(method, path, { json, body, signal } = {}) {
    const headers = this.headers({ Accept: "application/json" });
    let payload = body;
    if (json !== undefined) {
      headers.set("Content-Type", "application/json");
      payload = JSON.stringify(json);
    }
    const response = await fetch(path, { method, headers, body: payload, signal, cache: "no-store" });
    if (!response.ok) throw await ApiError.from(response);
    return response.json();
  }

  get(path, options) {
    return this.request("GET", path, options);
  }

  post(path, json, options = {}) {
    return this.request("POST", path, { ...options, json });
  }

  // A file the API serves (a zip): {blob, filename}, the name from Content-Disposition. Fetched
  // rather than linked, so that the API key goes along.
  async download(path, { signal } = {}) {
    const response = await fetch(path, { headers: this.headers(), signal, cache: "no-store" });
    if (!response.ok) throw await ApiError.from(response);
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = disposition.match(/filename\*=UTF-8''([^;]+)|filename="([^"]+)"/i);
    const filename = match ? (match[1] ? decodeURIComponent(match[1]) : match[2]) : path.split("/").pop();
    return { blob: await response.blob(), filename };
  }

  // POST /uploads (multipart field "file"): the stored image's {id, width, height, ...}.
  upload(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    return this.request("POST", "/uploads", { body: form });
  }

  // The job's events as {event, id, data}, from the first one to the final status (and the
  // renditions still being made then); it reconnects with Last-Event-ID (losing nothing) when a
  // connection ends before the final status.
  async *follow(jobId, { signal } = {}) {
    const url = `/animations/${encodeURIComponent(jobId)}/events`;
    let lastId = "";
    let retry = 2000;
    let ended = false;
    while (!signal?.aborted) {
      let response;
      try {
        const headers = this.headers({ Accept: "text/event-stream" });
        if (lastId) headers.set("Last-Event-ID", lastId);
        response = await fetch(url, { headers, signal, cache: "no-store" });
      } catch (error) {
        if (signal?.aborted) return;
        await sleep(retry, signal);
        continue;
      }
      if (!response.ok) {
        const error = await ApiError.from(response);
        if (error.status !== 429 && error.status < 500) throw error;
        await sleep(retry, signal);
        continue;
      }
      try {
        for await (const message of parseEventStream(response.body)) {
          if (message.retry !== undefined) retry = message.retry;
          if (message.id !== undefined) lastId = message.id;
          if (message.data === undefined) continue;
          const data = JSON.parse(message.data);
          yield { event: message.event, id: lastId, data };
          if (message.event === "status" && TERMINAL.has(data.status)) ended = true;
        }
      } catch (error) {
        if (signal?.aborted) return;
        if (error instanceof SyntaxError) throw error; // not the service's JSON: do not loop
      }
      // After the final status the server closes the stream once no rendition is being made.
      if (ended) return;
      // The connection ended before the final status (a bounded connection, a restart):
      // if the job is over anyway (its stream expired), say so; else reconnect.
      const job = await this.get(`/animations/${encodeURIComponent(jobId)}`, { signal }).catch(() => null);
      if (job && TERMINAL.has(job.status)) {
        yield { event: "status", id: lastId, data: { status: job.status, animation: job } };
        return;
      }
      await sleep(retry, signal);
    }
  }
}

// Server-sent events from a byte stream, as the HTML standard parses them: yields
// {event, data, id, retry} per dispatched message (data undefined when a message has none).
export async function* parseEventStream(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let message = { event: "message", data: [] };
  const dispatch = () => {
    const out = { event: message.event };
    if (message.data.length) out.data = message.data.join("\n");
    if (message.id !== undefined) out.id = message.id;
    if (message.retry !== undefined) out.retry = message.retry;
    message = { event: "message", data: [] };
    return out;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // an unfinished message at the end is dropped, as the standard says
      buffer += value;
      for (;;) {
        const end = buffer.search(/\r\n|\r|\n/);
        if (end < 0 || (end === buffer.length - 1 && buffer[end] === "\r")) break; // maybe \r\n split
        const line = buffer.slice(0, end);
        buffer = buffer.slice(buffer[end] === "\r" && buffer[end + 1] === "\n" ? end + 2 : end + 1);
        if (line === "") {
          const out = dispatch();
          if (out.data !== undefined || out.id !== undefined || out.retry !== undefined) yield out;
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") message.event = value;
        else if (field === "data") message.data.push(value);
        else if (field === "id" && !value.includes("\0")) message.id = value;
        else if (field === "retry" && /^\d+$/.test(value)) message.retry = Number(value);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
