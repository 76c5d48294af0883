// "Compare (grid)": the axis editor of the form. Each axis names a request field the server lets a
// grid vary (GridAxis.field of /openapi.json) and its values; every combination of the X and Y
// values is a cell (an animation of its own), counted against the server's limits.max_grid_cells.
// The rest of the form is the grid's base request (form.js posts it here, as POST /grids' "base").
import { caps, gridFields, samplerLabel } from "./capabilities.js";
import { $ } from "./util.js";

// The type of each field's values in the request (text for the others), as the CLI parses them.
const WHOLE = new Set(["steps", "seed"]);
const NUMBER = new Set(["guidance_scale", "strength", "lora"]);

const LABELS = {
  scheduler: "Sampler",
  schedule: "Schedule",
  steps: "Steps",
  seed: "Seed",
  guidance_scale: "Guidance",
  model: "Model",
  prompt: "Prompt (search and replace)",
  negative_prompt: "Negative prompt (search and replace)",
  strength: "Strength",
  lora: "LoRA weight",
};

function placeholder(field) {
  if (field === "scheduler") return caps.samplers.slice(0, 3).map((s) => s.id).join(", ") || "euler_a, ddim";
  if (field === "schedule") return caps.schedules.slice(0, 3).map((s) => s.id).join(", ") || "default, karras";
  if (field === "model") return caps.models.map((m) => m.name).join(", ") || "a model, another";
  if (field === "prompt" || field === "negative_prompt") return "a word of the prompt, what replaces it, …";
  return { steps: "10, 20, 30", seed: "1, 2, 3", guidance_scale: "3, 7.5", strength: "0.3, 0.6", lora: "0, 0.5, 1" }[field] ?? "";
}

export const gridActive = () => $("grid-mode").checked;

// "a, b" -> ["a", "b"]; a value with a comma is quoted: "red, old barn", x
export function splitValues(text) {
  const values = [];
  const pattern = /\s*(?:"((?:[^"]|"")*)"|([^,]*))\s*(?:,|$)/gy;
  let match;
  while (pattern.lastIndex < text.length && (match = pattern.exec(text)) !== null) {
    values.push(match[1] !== undefined ? match[1].replaceAll('""', '"') : match[2].trim());
    if (match[0] === "") break;
  }
  return values.filter((value, i) => value !== "" || i < values.length - 1);
}

// One axis as the request takes it, or {error} naming what is wrong with it.
function readAxis(name) {
  const field = $(`grid-${name}-field`).value;
  if (!field) return null;
  const values = splitValues($(`grid-${name}-values`).value);
  if (!values.length) return { field, values, error: `give the ${LABELS[field] ?? field} values, separated by commas` };
  if (values.some((v) => v === "")) return { field, values, error: "an empty value" };
  const typed = [];
  for (const value of values) {
    if (WHOLE.has(field) || NUMBER.has(field)) {
      const number = Number(value);
      if (!Number.isFinite(number) || (WHOLE.has(field) && !Number.isInteger(number))) {
        return { field, values, error: `“${value}” is not ${WHOLE.has(field) ? "a whole number" : "a number"}` };
      }
      typed.push(number);
    } else {
      typed.push(value);
    }
  }
  return { field, values: typed };
}

export function cellCount() {
  const x = readAxis("x");
  const y = readAxis("y");
  return (x?.values.length || 0) * (y ? y.values.length || 0 : 1);
}

function showCount() {
  const count = cellCount();
  const most = caps.limits?.max_grid_cells;
  const out = $("grid-count");
  out.textContent = `${count} ${count === 1 ? "cell" : "cells"}` + (most ? ` (this server allows up to ${most})` : "");
  out.classList.toggle("error", Boolean(most) && count > most);
  $("submit").textContent = gridActive() ? "Render grid" : "Render";
}

// What is wrong with the axes, as {field: "grid-x" | "grid-y", message} (the form shows them in place).
export function checkAxes() {
  const details = [];
  const x = readAxis("x");
  const y = readAxis("y");
  if (!x) details.push({ field: "grid-x", message: "choose the field the columns vary" });
  if (x?.error) details.push({ field: "grid-x", message: x.error });
  if (y?.error) details.push({ field: "grid-y", message: y.error });
  if (x && y && x.field === y.field) details.push({ field: "grid-y", message: "the same field as X: a grid varies two fields" });
  const most = caps.limits?.max_grid_cells;
  if (most && cellCount() > most) {
    details.push({ field: "grid-x", message: `${cellCount()} cells is above this server's limit of ${most}` });
  }
  return details;
}

// The body of POST /grids for a base request (the form's).
export function gridBody(base) {
  const body = { base, x: readAxis("x") };
  const y = readAxis("y");
  if (y) body.y = y;
  if ($("grid-partial").checked) body.allow_partial = true;
  return body;
}

// A refusal of POST /grids made to speak of the form: "cells[1,0].steps" at the axis that varies
// steps, with the cell's values; a cell's other fields at the form's field; "base.x" at x.
export function placeErrors(details, body) {
  const axes = { x: body.x, y: body.y };
  const varies = (axis, path) => axis && (path === axis.field || (axis.field === "lora" && path.startsWith("loras")));
  return details.map((detail) => {
    const field = String(detail.field ?? "");
    const cell = field.match(/^cells\[(\d+),(\d+)\]\.?(.*)$/);
    if (cell) {
      const [column, row, path] = [Number(cell[1]), Number(cell[2]), cell[3]];
      const at = [axes.x?.values[column], axes.y?.values[row]].filter((v) => v !== undefined).join(" × ");
      for (const [name, axis] of Object.entries(axes)) {
        if (varies(axis, path)) return { field: `grid-${name}`, message: `${at}: ${detail.message}` };
      }
      return { field: path, message: `cell ${at}: ${detail.message}` };
    }
    const axis = field.match(/^(x|y)(\.|$)/);
    if (axis) return { field: `grid-${axis[1]}`, message: detail.message };
    return { field: field.replace(/^base\./, ""), message: detail.message };
  });
}

function fillFields() {
  for (const name of ["x", "y"]) {
    const select = $(`grid-${name}-field`);
    const previous = select.value;
    const options = gridFields.map((f) => new Option(LABELS[f] ?? f, f));
    if (name === "y") options.unshift(new Option("none (one row)", ""));
    select.replaceChildren(...options);
    const fallback = name === "x" ? "scheduler" : "";
    select.value = [...select.options].some((o) => o.value === previous) ? previous : fallback;
  }
  showPlaceholders();
}

function showPlaceholders() {
  for (const name of ["x", "y"]) {
    const field = $(`grid-${name}-field`).value;
    const input = $(`grid-${name}-values`);
    input.placeholder = field ? placeholder(field) : "";
    input.disabled = !field;
    input.title = field === "scheduler" ? caps.samplers.map((s) => `${s.id} (${samplerLabel(s.id)})`).join(", ") : "";
  }
  showCount();
}

export function applyCapabilities() {
  fillFields();
}

export function setupGridForm() {
  $("grid-mode").addEventListener("change", () => {
    $("grid-editor").hidden = !gridActive();
    showCount();
  });
  for (const name of ["x", "y"]) {
    $(`grid-${name}-field`).addEventListener("change", showPlaceholders);
    $(`grid-${name}-values`).addEventListener("input", showCount);
  }
  fillFields();
}
