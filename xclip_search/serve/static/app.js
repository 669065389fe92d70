// xclip-search web page: search, watch the matching moment, find similar moments, tag a video, see the index.
// Plain JavaScript, no build step, no external assets. Text from the index (file names, labels) is only ever
// inserted with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  hits: [], current: null, videos: [], indexInfo: null, query: "", marks: new Map(),
  // Search as you type: the pending debounce timer, the text last seen in the box, the request whose answer
  // may still be shown (one at a time: a newer one aborts it), and the key of the search whose results are shown.
  typingTimer: 0, typed: "", seq: 0, inFlight: null, shownKey: "", shownStatus: "", searched: false,
};
const TYPE_DELAY_MS = 250; // search this long after the last keystroke
const TYPE_MIN_CHARS = 2; // shorter text is not searched while typing (Enter still searches it)

function fmtTime(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = (s % 60).toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

async function api(path, options = {}) {
  // options.signal: an AbortSignal; an aborted request rejects with an AbortError (see isAbort).
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const token = sessionStorage.getItem("xclip-token");
  if (token && options.write) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
    signal: options.signal,
  });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.hint = data && data.hint;
    throw error;
  }
  return data;
}

function setStatus(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// -- one results request at a time --------------------------------------------------------------------------
// Searches, refinements and "similar" all fill the one results grid. Each takes a new sequence number and aborts
// the request before it, so an answer made stale by newer typing (or a newer click) is never shown: the abort
// stops it on the wire, and the number check stops one that had already arrived.

function beginResults() {
  cancelResults();
  const controller = new AbortController();
  state.inFlight = { seq: ++state.seq, controller };
  $("results").setAttribute("aria-busy", "true");
  return state.inFlight;
}

function isCurrent(request) { return request === state.inFlight && request.seq === state.seq; }

function endResults(request) {
  if (!isCurrent(request)) {
    // An answer that came back although a newer request had begun (the abort was too late): dropped, and said so.
    $("results").dispatchEvent(new CustomEvent("xclip:stale", { bubbles: true, detail: { seq: request.seq } }));
    return false;
  }
  state.inFlight = null;
  $("results").removeAttribute("aria-busy");
  return true;
}

function cancelResults() {
  if (state.inFlight) state.inFlight.controller.abort();
  state.inFlight = null;
  state.seq++;
  $("results").removeAttribute("aria-busy");
}

function isAbort(error) { return error && error.name === "AbortError"; }

// -- results ------------------------------------------------------------------------------------------------

function card(item, onClick) {
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  const img = node.querySelector("img");
  const thumb = node.querySelector(".thumb");
  img.addEventListener("error", () => thumb.classList.add("missing"), { once: true });
  if (item.thumbnail_url) img.src = item.thumbnail_url; else thumb.classList.add("missing");
  node.querySelector(".time").textContent = item.end != null ? `${fmtTime(item.start)}–${fmtTime(item.end)}` : fmtTime(item.duration_s || 0);
  node.querySelector(".name").textContent = item.name;
  node.title = item.path;
  node.querySelector(".score").textContent = item.score != null ? `score ${item.score.toFixed(4)}` : (item.segments != null ? `${item.segments} moments` : "");
  node.querySelector(".rank").textContent = item.rank != null ? `#${item.rank}` : "";
  if (item.match && item.match !== "visual") {
    // Found by what is said: how it matched, and the line itself with the query's words marked.
    node.querySelector(".score").textContent += item.match === "both" ? " · shown + said" : " · said";
    if (item.cue) node.querySelector(".card-body").append(cueLine(item.cue, state.query || ""));
  }
  if (item.segment_id != null) node.dataset.segmentId = item.segment_id;
  node.dataset.start = item.start != null ? item.start : 0;
  node.addEventListener("click", () => onClick(item, node));
  return node;
}

// The words of a query as the full-text search reads them (quotes, OR and a trailing * are syntax).
function queryWords(query) {
  return query.replace(/["*]/g, " ").split(/\s+/).filter((w) => w && w !== "OR")
    .flatMap((w) => fold(w).split(/[^\p{L}\p{N}\p{M}]+/u)).filter(Boolean);
}

// Case and diacritics folded, as the index folds them ("Café" finds "cafe").
function fold(text) {
  return text.normalize("NFD").replace(/\p{Mn}/gu, "").toLowerCase();
}

// A cue's text with every word that begins like a query word marked (<mark>, built as nodes: no HTML parsing).
function cueLine(cue, query) {
  const text = cue.text.replace(/\s+/g, " ");
  let folded = "";
  const origin = []; // index in `text` of each character of `folded`
  for (let i = 0; i < text.length; i++) {
    const f = fold(text[i]);
    for (let k = 0; k < f.length; k++) { folded += f[k]; origin.push(i); }
  }
  const marked = new Array(text.length).fill(false);
  const isWord = (ch) => /[\p{L}\p{N}\p{M}]/u.test(ch || "");
  const spaceless = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Thai}]/u;
  for (const word of queryWords(query)) {
    let at = folded.indexOf(word);
    while (at >= 0) {
      if (spaceless.test(word) || !isWord(folded[at - 1])) {
        for (let k = at; k < at + word.length; k++) marked[origin[k]] = true;
      }
      at = folded.indexOf(word, at + 1);
    }
  }
  const line = el("div", { class: "cue", title: `${cue.source}${cue.language ? ` · ${cue.language}` : ""} · ${fmtTime(cue.start)}–${fmtTime(cue.end)}` });
  let i = 0;
  while (i < text.length) {
    let j = i;
    while (j < text.length && marked[j] === marked[i]) j++;
    line.append(marked[i] ? el("mark", { text: text.slice(i, j) }) : document.createTextNode(text.slice(i, j)));
    i = j;
  }
  return line;
}

function showHits(data, label, kind) {
  state.hits = data.results;
  const grid = $("results");
  grid.replaceChildren();
  grid.dataset.kind = kind;
  const query = kind === "similar" ? "" : state.query;
  grid.dataset.query = query;
  const ms = data.timings_ms && data.timings_ms.total != null ? ` in ${Math.round(data.timings_ms.total)} ms` : "";
  state.shownStatus = data.results.length
    ? `${data.results.length} result${data.results.length === 1 ? "" : "s"} for ${label}${ms}`
    : `No results for ${label}. Try other words, or clear the file filter.`;
  setStatus($("status"), state.shownStatus);
  // Announced for scripts and tests: which results are on screen now (kind and the query they answer).
  grid.dispatchEvent(new CustomEvent("xclip:results", { bubbles: true, detail: { kind, query, count: data.results.length } }));
  if (!data.results.length) return;
  for (const hit of data.results) {
    const node = card(hit, (h, n) => {
      document.querySelectorAll(".card.active").forEach((x) => x.classList.remove("active"));
      n.classList.add("active");
      play({ video_id: h.video_id, video_url: h.video_url, subtitles_url: h.subtitles_url, cue: h.cue, name: h.name, path: h.path, start: h.start, end: h.end, score: h.score, segment_id: h.segment_id });
    });
    if ((kind === "search" || kind === "refined") && hit.segment_id != null) addFeedback(node, hit);
    if (hit.concept_prob != null) node.querySelector(".score").textContent += ` · P ${hit.concept_prob.toFixed(2)}`;
    grid.append(node);
  }
}

// -- feedback: thumbs up / down refine the query at once; the refinement can be saved as a concept ----------

function addFeedback(node, hit) {
  const box = el("span", { class: "feedback" });
  for (const [value, text, title] of [[1, "👍", "This matches: refine the results"], [-1, "👎", "This does not match"]]) {
    const b = el("span", { class: "fb", role: "button", tabindex: "0", title, "aria-label": title, "data-value": String(value), text });
    const press = (event) => { event.stopPropagation(); event.preventDefault(); mark(hit.segment_id, value); };
    b.addEventListener("click", press);
    b.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") press(event); });
    box.append(b);
  }
  node.querySelector(".meta").append(box);
  paintMark(node, state.marks.get(hit.segment_id) || 0);
}

function paintMark(node, value) {
  node.classList.toggle("marked-up", value === 1);
  node.classList.toggle("marked-down", value === -1);
  node.querySelectorAll(".fb").forEach((b) => b.setAttribute("aria-pressed", String(Number(b.dataset.value) === value)));
}

function marked(value) { return [...state.marks].filter(([, v]) => v === value).map(([id]) => id); }

async function mark(segmentId, value) {
  if (state.marks.get(segmentId) === value) state.marks.delete(segmentId); else state.marks.set(segmentId, value);
  document.querySelectorAll(`.card[data-segment-id="${segmentId}"]`).forEach((n) => paintMark(n, state.marks.get(segmentId) || 0));
  await refine();
}

async function refine() {
  const positive = marked(1), negative = marked(-1);
  $("concept-save").hidden = positive.length === 0;
  if (!positive.length) {
    setStatus($("status"), negative.length ? "Mark at least one result 👍 to refine the search." : $("status").textContent);
    return;
  }
  setStatus($("status"), "Refining…");
  const request = beginResults();
  try {
    const data = await api("/api/search", {
      method: "POST",
      body: { q: state.query, positive, negative, top_k: Number($("top-k").value), per_video: !$("all-segments").checked },
      signal: request.controller.signal,
    });
    if (!endResults(request)) return;
    showHits(data, `“${state.query}” refined by ${positive.length} 👍 and ${negative.length} 👎`, "refined");
  } catch (error) {
    if (isAbort(error) || !endResults(request)) return;
    setStatus($("status"), `${error.message}${error.hint ? ` — ${error.hint}` : ""}`, true);
  }
}

async function saveConcept(event) {
  if (event) event.preventDefault();
  const name = $("concept-name").value.trim();
  if (!name) return;
  try {
    const data = await api("/api/concepts", {
      method: "POST", write: true, body: { name, q: state.query, positive: marked(1), negative: marked(-1) },
    });
    setStatus($("concept-status"), `Saved “${data.learned.name}”: type it in the tag box to score videos with it.`);
  } catch (error) {
    if (error.status === 401) {
      const token = prompt("This server needs its access token to save a concept:");
      if (token) { sessionStorage.setItem("xclip-token", token); return saveConcept(); }
    }
    setStatus($("concept-status"), error.message, true);
  }
}

// Enter (or the Search button) searches at once; typing searches through `onType`. The results on screen stay
// until the new answer arrives, and then are replaced in one step (no empty grid while typing).
async function runSearch(event, typed = false) {
  if (event) event.preventDefault();
  clearTimeout(state.typingTimer);
  const q = $("q").value.trim();
  state.typed = q;
  if (!q) return;
  const params = new URLSearchParams({ q, top_k: $("top-k").value, per_video: String(!$("all-segments").checked) });
  const pathFilter = $("path-filter").value.trim();
  if (pathFilter) params.set("path", pathFilter);
  const key = params.toString();
  if (typed && key === state.shownKey) { cancelResults(); setStatus($("status"), state.shownStatus); return; } // e.g. a letter typed and deleted
  history.replaceState(null, "", `?${new URLSearchParams({ q })}`);
  const request = beginResults();
  setStatus($("status"), state.searched ? `Searching “${q}”…` : "Searching… (the first search loads the model)");
  state.searched = true;
  try {
    const data = await api(`/api/search?${params}`, { signal: request.controller.signal });
    if (!endResults(request)) return;
    // New query text, new results: feedback marks belonged to the old ones.
    state.query = q;
    state.shownKey = key;
    state.marks = new Map();
    $("concept-save").hidden = true;
    setStatus($("concept-status"), "");
    showHits(data, `“${q}”`, "search");
  } catch (error) {
    if (isAbort(error) || !endResults(request)) return;
    setStatus($("status"), `${error.message}${error.hint ? ` — ${error.hint}` : ""}`, true);
  }
}

// Every change of the box's text: abort what was asked for older text, and search again once typing pauses.
// An emptied box shows the library again; text shorter than TYPE_MIN_CHARS waits for more (or for Enter).
function onType() {
  const q = $("q").value.trim();
  if (q === state.typed) return; // e.g. a trailing space: nothing new to search
  state.typed = q;
  clearTimeout(state.typingTimer);
  if (state.inFlight) { cancelResults(); setStatus($("status"), state.shownStatus); }
  if (!q) { clearSearch(); return; }
  if (q.length < TYPE_MIN_CHARS) return;
  state.typingTimer = setTimeout(() => runSearch(null, true), TYPE_DELAY_MS);
}

function clearSearch() {
  history.replaceState(null, "", location.pathname);
  state.query = "";
  state.shownKey = "";
  state.hits = [];
  state.marks = new Map();
  $("concept-save").hidden = true;
  setStatus($("concept-status"), "");
  setStatus($("status"), "");
  if (state.indexInfo && !state.indexInfo.segments) showEmptyIndex(); else showLibrary();
}

async function findSimilar() {
  if (!state.current || state.current.segment_id == null) return;
  setStatus($("status"), "Finding similar moments…");
  const request = beginResults();
  try {
    const data = await api("/api/search/similar", {
      method: "POST",
      body: { segment_id: state.current.segment_id, top_k: Number($("top-k").value), per_video: !$("all-segments").checked },
      signal: request.controller.signal,
    });
    if (!endResults(request)) return;
    state.shownKey = ""; // the grid no longer shows the typed query's results
    showHits(data, `moments like ${state.current.name} ${fmtTime(state.current.start)}`, "similar");
    $("results").scrollIntoView({ behavior: "smooth", block: "start" });
  } catch (error) {
    if (isAbort(error) || !endResults(request)) return;
    setStatus($("status"), error.message, true);
  }
}

// -- player -------------------------------------------------------------------------------------------------

function play(item) {
  state.current = item;
  const video = $("video");
  $("player").hidden = false;
  $("player-title").textContent = item.name;
  $("player-title").title = item.path;
  const score = item.score != null ? ` · score ${item.score.toFixed(4)}` : "";
  $("player-sub").textContent = item.end != null ? `Moment ${fmtTime(item.start)}–${fmtTime(item.end)}${score}` : "Whole video";
  $("similar").disabled = item.segment_id == null;
  const seekAndPlay = () => {
    video.currentTime = item.start || 0;
    const started = video.play();
    if (started) started.catch(() => { video.muted = true; video.play().catch(() => {}); });
    drawTimeline();
  };
  if (video.dataset.src !== item.video_url) {
    video.dataset.src = item.video_url;
    video.querySelectorAll("track").forEach((t) => t.remove());
    const subtitles = item.subtitles_url || `/api/videos/${item.video_id}/subtitles.vtt`;
    // The catalog's subtitles and transcript as a WebVTT track; shown at once when this moment was found by them.
    const track = el("track", { kind: "subtitles", label: "Subtitles", src: subtitles });
    if (item.cue) track.setAttribute("default", "");
    video.append(track);
    video.src = item.video_url;
    video.addEventListener("loadedmetadata", seekAndPlay, { once: true });
    video.load();
  } else if (video.readyState >= 1) {
    seekAndPlay();
  } else {
    video.addEventListener("loadedmetadata", seekAndPlay, { once: true });
  }
  loadMoments(item);
  selectTagVideo(item.video_id);
  $("player").scrollIntoView({ behavior: "smooth", block: "start" });
}

function drawTimeline() {
  const video = $("video");
  const item = state.current;
  const moment = $("timeline-moment");
  if (!item || item.end == null || !video.duration || !isFinite(video.duration)) { moment.style.width = "0"; return; }
  moment.style.left = `${(100 * item.start) / video.duration}%`;
  moment.style.width = `${(100 * Math.max(0, item.end - item.start)) / video.duration}%`;
}

async function loadMoments(item) {
  const strip = $("moments");
  strip.replaceChildren();
  try {
    const video = await api(`/api/videos/${item.video_id}`);
    if (state.current !== item) return;
    // One thumbnail per shot (consecutive segments of one detected shot; a segment without a shot stands alone).
    const shots = video.shots || video.segments.map((s) => ({ start: s.start, end: s.end, segment_ids: [s.segment_id], thumbnail_url: s.thumbnail_url }));
    for (const shot of shots) {
      const img = el("img", { alt: "", loading: "lazy" });
      img.src = shot.thumbnail_url;
      const button = el("button", {
        type: "button",
        title: `Play ${fmtTime(shot.start)}–${fmtTime(shot.end)}`,
        "data-start": String(shot.start),
        onclick: () => play({ video_id: item.video_id, video_url: item.video_url, name: item.name, path: item.path, start: shot.start, end: shot.end, segment_id: shot.segment_ids[0] }),
      }, img, el("span", { text: `${fmtTime(shot.start)}–${fmtTime(shot.end)}` }));
      if (shot.segment_ids.includes(item.segment_id)) button.classList.add("current");
      strip.append(button);
    }
  } catch (_) { /* the strip is a convenience; the player works without it */ }
}

// -- tagging ------------------------------------------------------------------------------------------------

function selectTagVideo(videoId) {
  const select = $("tag-video");
  if ([...select.options].some((o) => o.value === String(videoId))) select.value = String(videoId);
}

function bar(label, prob) {
  const fill = el("div", { class: "bar-fill" });
  fill.style.width = `${(100 * prob).toFixed(1)}%`;
  return el("div", { class: "bar" },
    el("div", { class: "bar-track" }, fill, el("div", { class: "bar-label", text: label })),
    el("div", { class: "bar-value", text: `${(100 * prob).toFixed(1)}%` }));
}

async function runTag(event) {
  event.preventDefault();
  const videoId = Number($("tag-video").value);
  const labels = $("tag-labels").value;
  if (!videoId || !labels.trim()) return;
  setStatus($("tag-status"), "Scoring labels…");
  $("tag-results").replaceChildren();
  try {
    const data = await api("/api/tag", { method: "POST", body: { video_id: videoId, labels } });
    setStatus($("tag-status"), `${data.segments.length} moment${data.segments.length === 1 ? "" : "s"} of ${data.path.split("/").pop()}; probabilities averaged over them`);
    const concepts = new Set(data.segments.flatMap((s) => s.labels.filter((l) => l.scored_by === "concept").map((l) => l.label)));
    const bars = el("div", { class: "bars" }, ...data.labels.map((l) => bar(concepts.has(l.label) ? `${l.label} (concept)` : l.label, l.prob)));
    const rows = data.segments.map((s) => el("tr", {},
      el("td", { text: `${fmtTime(s.start)}–${fmtTime(s.end)}` }),
      el("td", { text: `${s.labels[0].label} (${(100 * s.labels[0].prob).toFixed(0)}%)` })));
    const perMoment = el("details", { class: "per-moment" }, el("summary", { text: "Best label per moment" }), el("table", {}, ...rows));
    $("tag-results").replaceChildren(bars, perMoment);
  } catch (error) {
    setStatus($("tag-status"), error.message, true);
  }
}

// -- index --------------------------------------------------------------------------------------------------

function count(value, label, bad = false) {
  return el("div", { class: `count${bad && value ? " bad" : ""}` }, el("b", { text: String(value) }), el("span", { text: label }));
}

async function loadIndex() {
  let info;
  try {
    info = await api("/api/index?failures=200");
  } catch (error) {
    $("summary").textContent = `Index unavailable: ${error.message}`;
    return;
  }
  const changed = !state.indexInfo || state.indexInfo.generation !== info.generation;
  state.indexInfo = info;
  const v = info.videos;
  $("summary").textContent = `${v.indexed} video${v.indexed === 1 ? "" : "s"} · ${info.segments} moments · model ${info.model.source}`;
  $("index-counts").replaceChildren(
    count(v.indexed, "videos indexed"), count(info.segments, "searchable moments"),
    count(v.failed, "failed", true), count(v.skipped, "skipped"));
  const updated = info.updated_at ? new Date(info.updated_at).toLocaleString() : "never";
  $("index-meta").textContent = `Generation ${info.generation} · updated ${updated} · ${info.index}`;
  const box = $("failures-box");
  box.hidden = !info.failure_count;
  $("failures-title").textContent = `${info.failure_count} file${info.failure_count === 1 ? "" : "s"} could not be indexed`;
  $("failures").replaceChildren(...info.failures.map((f) =>
    el("li", {}, el("span", { text: f.path }), el("span", { class: "reason", text: `${f.status}: ${f.reason || "no reason recorded"}` }))));
  const job = info.reindex || {};
  $("reindex").disabled = job.state === "running" || info.writes === "disabled";
  $("reindex").title = info.writes === "disabled" ? "Writes are disabled: start the server with --token" : $("reindex").title;
  $("reindex-status").textContent = job.state === "running" ? "re-indexing…" : job.state === "finished" && job.report ? `last run: ${job.report.indexed} indexed, ${job.report.failed} failed` : job.state === "failed" ? "last run failed" : "";
  if (changed) await loadVideos();
  if (!info.segments) showEmptyIndex();
}

async function loadVideos() {
  try {
    const data = await api("/api/videos?status=indexed&limit=1000");
    state.videos = data.videos;
    const select = $("tag-video");
    const keep = select.value;
    select.replaceChildren(...data.videos.map((v) => el("option", { value: String(v.video_id), text: v.name })));
    if (keep) select.value = keep;
    if (!state.hits.length && !$("q").value) showLibrary();
  } catch (_) { /* the tag box stays empty */ }
}

function showLibrary() {
  const grid = $("results");
  grid.replaceChildren();
  grid.dataset.kind = "library";
  grid.dataset.query = "";
  if (!state.videos.length) return;
  state.shownStatus = "Your library — type above to search it, or click a video to watch it.";
  setStatus($("status"), state.shownStatus);
  for (const v of state.videos.slice(0, 48)) {
    grid.append(card(Object.assign({}, v, { start: 0 }), () => play({ video_id: v.video_id, video_url: v.video_url, name: v.name, path: v.path, start: 0 })));
  }
}

function showEmptyIndex() {
  $("results").replaceChildren(el("div", { class: "empty" },
    el("p", { text: "This index has no searchable videos yet." }),
    el("p", {}, "Add some from a terminal: ", el("code", { text: "xclip-search index ~/Videos --index " + state.indexInfo.index }))));
}

async function reindex() {
  try {
    await api("/api/index/update", { method: "POST", write: true });
  } catch (error) {
    if (error.status === 401) {
      const token = prompt("This server needs its access token to re-index:");
      if (token) { sessionStorage.setItem("xclip-token", token); return reindex(); }
    }
    $("reindex-status").textContent = error.message;
    return;
  }
  $("reindex-status").textContent = "re-indexing…";
}

// -- wiring -------------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", runSearch);
  $("q").addEventListener("input", onType);
  $("tag-form").addEventListener("submit", runTag);
  $("concept-save").addEventListener("submit", saveConcept);
  $("player-close").addEventListener("click", () => { $("video").pause(); $("player").hidden = true; });
  $("replay").addEventListener("click", () => { if (state.current) { $("video").currentTime = state.current.start || 0; $("video").play(); } });
  $("similar").addEventListener("click", findSimilar);
  $("tag-this").addEventListener("click", () => { if (state.current) { selectTagVideo(state.current.video_id); $("tag-labels").focus(); } });
  $("reindex").addEventListener("click", reindex);
  $("video").addEventListener("durationchange", drawTimeline);
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && document.activeElement.tagName !== "INPUT") { e.preventDefault(); $("q").focus(); }
  });
  const initial = new URLSearchParams(location.search).get("q");
  loadIndex().then(() => { if (initial) { $("q").value = initial; runSearch(); } });
  setInterval(() => { if (!document.hidden) loadIndex(); }, 15000);
  $("q").focus();
});
