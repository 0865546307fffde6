// LabSight web page: signs in with a token, submits jobs to the gateway's web API, shows them.
"use strict";

const TERMINAL = ["done", "failed", "cancelled", "dead"];
const POLL_MS = 500;
let token = sessionStorage.getItem("labsight-token") || "";
let pipelines = [];
const $ = (id) => document.getElementById(id);

class ApiError extends Error {}

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + token, ...(options.headers || {}) };
  let answer;
  try {
    answer = await fetch(path, { ...options, headers });
  } catch (error) {
    throw new ApiError("The gateway's web page does not answer (" + error.message + "); is the gateway running?");
  }
  if (!answer.ok) {
    let text = answer.status + " " + answer.statusText;
    try {
      const body = await answer.json();
      text = body.error + " (" + body.code + ")";
    } catch (ignored) { /* not JSON: keep the HTTP status */ }
    throw new ApiError(text);
  }
  return answer;
}

const getJson = async (path) => (await api(path)).json();
const postJson = async (path, value) => (await api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(value),
})).json();

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve({ name: file.name, data: reader.result.split(",", 2)[1] || "" });
    reader.onerror = () => reject(new ApiError("cannot read " + file.name + ": " + reader.error));
    reader.readAsDataURL(file);
  });
}

async function signIn(event) {
  if (event) event.preventDefault();
  token = $("token").value.trim() || token;
  if (!token) {
    showError("Paste your token first (labsight token create, or the one labsight up printed).");
    return;
  }
  try {
    pipelines = await getJson("/api/pipelines");
  } catch (error) {
    showError("Sign-in refused: " + error.message);
    return;
  }
  sessionStorage.setItem("labsight-token", token);
  showError("");
  $("login").hidden = true;
  $("app").hidden = false;
  $("who").textContent = "signed in";
  $("pipeline").replaceChildren(...pipelines.map((p) => {
    const option = new Option(p.name + (p.available ? "" : " (not available here)"), p.name);
    option.disabled = !p.available;
    return option;
  }));
  showPipeline();
}

function showPipeline() {
  const pipeline = pipelines.find((p) => p.name === $("pipeline").value);
  if (!pipeline) return;
  $("pipeline-description").textContent = pipeline.description;
  $("params").replaceChildren(...pipeline.parameters.map((param) => {
    const label = document.createElement("label");
    label.textContent = param.name;
    label.title = param.description;
    const input = document.createElement("input");
    input.name = param.name;
    input.id = "param-" + param.name;
    input.placeholder = param.default;
    input.title = param.description;
    label.append(input);
    return label;
  }));
}

function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function showMode() {
  for (const block of document.querySelectorAll("[data-mode]")) block.hidden = block.dataset.mode !== mode();
}

function params() {
  const values = {};
  for (const input of $("params").querySelectorAll("input")) if (input.value.trim()) values[input.name] = input.value.trim();
  return values;
}

async function submit(event) {
  event.preventDefault();
  showError("");
  $("result").hidden = true;
  $("batch").hidden = true;
  const request = { pipeline: $("pipeline").value, params: params() };
  $("submit-button").disabled = true;
  try {
    if (mode() === "batch") {
      const files = [...$("batch-files").files];
      if (!files.length) throw new ApiError("Choose one or more image files for the batch.");
      request.files = await Promise.all(files.map(readFile));
      const batch = await postJson("/api/batches", request);
      await followBatch(batch.batch_id);
    } else {
      if (mode() === "channels") {
        request.channels = {};
        for (const channel of ["red", "green", "blue", "yellow"]) {
          const file = $("channel-" + channel).files[0];
          if (!file) throw new ApiError("Choose the " + channel + " channel image.");
          request.channels[channel] = await readFile(file);
        }
      } else {
        const file = $("image").files[0];
        if (!file) throw new ApiError("Choose an image file.");
        request.image = await readFile(file);
      }
      const job = await postJson("/api/jobs", request);
      await followJob(job.job_id);
    }
  } catch (error) {
    showError(error instanceof ApiError ? error.message : "The page failed: " + error);
  } finally {
    $("submit-button").disabled = false;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function followJob(jobId) {
  $("progress").hidden = false;
  let job;
  for (;;) {
    job = await getJson("/api/jobs/" + encodeURIComponent(jobId));
    $("job-id").textContent = "job " + job.job_id;
    $("job-status").textContent = job.status;
    $("job-message").textContent = job.progress_message;
    $("job-progress").value = job.progress;
    if (TERMINAL.includes(job.status)) break;
    await sleep(POLL_MS);
  }
  if (job.status !== "done") throw new ApiError("Job " + job.job_id + " " + job.status + ": " + (job.error || "no error recorded"));
  $("job-progress").value = 1;
  await showResult(jobId);
}

async function followBatch(batchId) {
  $("batch").hidden = false;
  $("batch-id").textContent = batchId;
  for (;;) {
    const batch = await getJson("/api/batches/" + encodeURIComponent(batchId));
    $("batch-counts").tBodies[0].replaceChildren(...Object.entries(batch.counts).map(([status, count]) => row([status, count])),
      row(["total", batch.total]));
    $("batch-jobs").tBodies[0].replaceChildren(...batch.jobs.map((job) => {
      const line = row([job.input_name || job.job_id, job.status, job.error]);
      const cell = document.createElement("td");
      if (job.status === "done") {
        const button = document.createElement("button");
        button.textContent = "show";
        button.onclick = () => showResult(job.job_id).catch((error) => showError(error.message));
        cell.append(button);
      }
      line.append(cell);
      return line;
    }));
    if (batch.finished) return;
    await sleep(POLL_MS * 2);
  }
}

function row(values, numeric = false) {
  const line = document.createElement("tr");
  for (const value of values) {
    const cell = document.createElement("td");
    cell.textContent = value === null || value === undefined ? "" : typeof value === "number" ? format(value) : value;
    if (numeric && typeof value === "number") cell.className = "number";
    line.append(cell);
  }
  return line;
}

function format(value) {
  return Number.isInteger(value) ? String(value) : value.toPrecision(5);
}

async function loadImage(path, img, figure) {
  const blob = await (await api(path)).blob();
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  figure.hidden = false;
}

function downloadButton(label, path, filename) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.onclick = async () => {
    try {
      const blob = await (await api(path)).blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = filename;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (error) {
      showError(error.message);
    }
  };
  return button;
}

async function showResult(jobId) {
  const base = "/api/jobs/" + encodeURIComponent(jobId);
  const result = await getJson(base + "/result");
  $("result").hidden = false;
  $("result-name").textContent = (result.input_name || result.job_id) + " (" + result.pipeline + ")";
  $("warnings").replaceChildren(...result.warnings.map((text) => Object.assign(document.createElement("li"), { textContent: text })));
  const downloads = [];
  if (result.table.name) downloads.push(downloadButton("table (CSV)", base + "/table.csv", jobId + ".csv"));
  if (result.mask_kinds.length) downloads.push(downloadButton("masks (TIFF)", base + "/masks.tiff", jobId + "_masks.tif"));
  $("downloads").replaceChildren(...downloads);
  $("composite-figure").hidden = true;
  $("masks-figure").hidden = true;
  $("classes-figure").hidden = true;
  if (result.composite) await loadImage(base + "/composite.png", $("composite"), $("composite-figure"));
  if (result.masks) await loadImage(base + "/masks.png", $("masks"), $("masks-figure"));
  if (result.classes_picture) await loadImage(base + "/classes.png", $("classes-picture"), $("classes-figure"));
  $("classes-block").hidden = !result.classes.length;
  $("classes").tBodies[0].replaceChildren(...result.classes.map((cell) => row([cell.cell,
    cell.classes.map((c) => c.name + " (" + (c.p === null ? "?" : c.p.toFixed(3)) + ")").join(", ")])));
  const table = result.table;
  $("table-block").hidden = !table.name;
  $("table-title").textContent = "Table " + table.name + " (first " + table.rows.length + " of " + table.total_rows + " rows)";
  const head = document.createElement("tr");
  for (const name of ["id", ...table.columns]) head.append(Object.assign(document.createElement("th"), { textContent: name }));
  $("features").tHead.replaceChildren(head);
  $("features").tBodies[0].replaceChildren(...table.rows.map((values) => row(values, true)));
}

$("login-form").addEventListener("submit", signIn);
$("job-form").addEventListener("submit", submit);
$("pipeline").addEventListener("change", showPipeline);
for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", showMode);
if (token) signIn();
