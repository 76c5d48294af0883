// What this server can do, from the API itself: GET /capabilities (codecs, samplers, schedules,
// limits, models, adapters) and the request schema of /openapi.json (each field's default and
// fixed bounds). The form and the job view read them from here; nothing is copied into the page.
import { ApiError } from "./api.js";

// Used until GET /capabilities answers (no encoder has reported yet).
const FALLBACK = {
  codecs: ["h264", "vp9", "gif"],
  interpolations: ["none"],
  schedulers: [],
  samplers: [],
  schedules: [],
  limits: null,
  default_model: "",
  models: [],
  adapters: [],
};

export let caps = FALLBACK;

// {field: {default, minimum, maximum, multipleOf, maxLength}} of POST /animations' body, the
// animation and capture options under "animation.<name>" and "capture.<name>"; empty when
// /openapi.json cannot be read.
export let schema = {};

// The request fields a grid's axis may vary (GridAxis.field of /openapi.json; this list until it is read).
export let gridFields = ["scheduler", "schedule", "steps", "seed", "guidance_scale", "model", "prompt",
  "negative_prompt", "strength", "lora"];

export const samplerLabel = (id) => caps.samplers.find((s) => s.id === id)?.label ?? id;
export const scheduleLabel = (id) => caps.schedules.find((s) => s.id === id)?.label ?? id;
export const modelInfo = (name) => caps.models.find((m) => m.name === (name || caps.default_model));

function readSchema(openapi) {
  const schemas = openapi?.components?.schemas ?? {};
  const fields = {};
  const take = (properties, prefix) => {
    for (const [name, property] of Object.entries(properties ?? {})) {
      const variant = property.anyOf?.find((v) => v.type && v.type !== "null") ?? property;
      fields[prefix + name] = { ...variant, default: property.default };
    }
  };
  take(schemas.AnimationCreate?.properties, "");
  take(schemas.AnimationOptions?.properties, "animation.");
  take(schemas.CaptureOptions?.properties, "capture.");
  return fields;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Calls onChange(caps) with the fallback at once, then with the server's answer; GET /capabilities
// is asked again while it is unavailable (503) and while no render worker has listed its models.
// onState(text) says what is awaited ("" once all is known).
export async function loadCapabilities(api, { onChange, onState }) {
  onState("Loading what this server can do…");
  onChange(caps);
  try {
    const openapi = await api.get("/openapi.json");
    schema = readSchema(openapi);
    gridFields = openapi?.components?.schemas?.GridAxis?.properties?.field?.enum ?? gridFields;
  } catch {
    schema = {}; // the form leaves fields blank: the server applies its defaults
  }
  for (let attempt = 0; attempt < 60; attempt += 1) {
    try {
      caps = await api.get("/capabilities");
      onChange(caps);
      if (caps.models.length > 0 || attempt >= 10) {
        onState("");
        return;
      }
      onState("Waiting for a render worker to list its models…");
    } catch (error) {
      const waiting = error instanceof ApiError && error.status === 503;
      if (!waiting) {
        onState(`Capabilities unavailable: ${error.message}`);
        return;
      }
      onState("Waiting for the encoder to report its codecs…");
    }
    await sleep(2000);
  }
}
