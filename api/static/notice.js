// The page's one notice (an error or a note under the header) and how an error reads there.
import { ApiError } from "./api.js";
import { $, el } from "./util.js";

// notify("") hides it; causes (strings) are listed under the message, one per line.
export function notify(message, { kind = "error", causes = [] } = {}) {
  const notice = $("notice");
  notice.dataset.kind = kind;
  notice.replaceChildren();
  if (message) notice.append(el("span", { class: "notice-message", text: message }));
  if (causes.length > 1) notice.append(el("ul", { class: "causes" }, ...causes.map((cause) => el("li", { text: cause }))));
  notice.hidden = !message;
}

export function explain(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) {
      $("key-panel").open = true;
      return `This server needs an API key: ${error.message}`;
    }
    return error.message;
  }
  return `The service could not be reached: ${error.message || error}`;
}

// An error in the notice: a refused request (several causes: each on its own line) or any other.
export function notifyError(error) {
  if (error instanceof ApiError && error.details.length > 1) {
    const causes = error.details.map((d) => (d.field ? `${d.field}: ${d.message}` : d.message));
    notify(`The server refused this request (${causes.length} problems):`, { causes });
  } else {
    notify(explain(error));
  }
}
