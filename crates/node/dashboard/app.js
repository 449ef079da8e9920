// The gridmesh dashboard: reads the node's public API, refreshes on every block from the
// /v1/events stream. Text goes into the page through textContent only (never HTML from data).
"use strict";

// A signed-in member's session goes with every request: public views then include the
// member's own trades, bills and readings (the node shows each member's energy only to its
// session and whom it grants it).
const api = async (path) => {
  const headers = { accept: "application/json" };
  const s = session();
  if (s) headers.authorization = `Bearer ${s.token}`;
  const r = await fetch(path, { headers });
  if (r.status === 401 && s) { sessionStorage.removeItem("gridmesh.session"); throw new Error("the session ended: sign in again"); }
  const body = await r.json();
  if (!r.ok) throw new Error(`${path}: ${body.message || r.status}`);
  return body;
};

// el("div", {class: "card"}, child, "text", ...)
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
};

// The one date format: "2026-05-04 17:15 UTC". A slot is shown as the time its delivery starts.
const utc = (ms) => new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
const slotTime = (slot) => (slot === null || slot === undefined ? null : utc(Number(slot) * 900000));
// Numbers for people: a fixed number of places per quantity, digits grouped by three with a
// narrow space (as SI writes them, the same in every language). API values are exact decimals;
// the page rounds them.
const grouped = (digits) => digits.replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f");
const rounded = (v, places) => {
  if (v === null || v === undefined || v === "") return null;
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  const [whole, part] = Math.abs(n).toFixed(places).split(".");
  const negative = n < 0 && /[1-9]/.test(whole + (part || ""));
  return `${negative ? "-" : ""}${grouped(whole)}${part ? `.${part}` : ""}`;
};
// Tokens to the hundredth (whole tokens from 100 000 up), prices per kWh to the thousandth,
// energy to 10 Wh (whole kWh from 1 000 up), counts whole.
const tokens = (v) => rounded(v, Math.abs(Number(v)) >= 1e5 ? 0 : 2);
const price = (v) => rounded(v, 3);
const kwh = (v) => rounded(v, Math.abs(Number(v)) >= 1e3 ? 0 : 2);
const count = (v) => rounded(v, 0);
const short = (hex) => (hex && hex.length > 16 ? `${hex.slice(0, 8)}…${hex.slice(-6)}` : hex);
// An address as people see it everywhere else (`gridmesh keys show`, the CLI, `checksummed` in
// the API): bech32m (BIP-350) over its 32 bytes with the prefix `gm`, so that a slip in copying
// it is caught. Anything that is not 64 hex digits is shown as it is.
const BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const bech32Polymod = (values) => {
  const gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= gen[i];
  }
  return chk >>> 0;
};
const checksummed = (hex) => {
  if (!/^[0-9a-fA-F]{64}$/.test(hex || "")) return hex;
  const data = [];
  let acc = 0, bits = 0;
  for (const byte of hex.match(/../g).map((b) => parseInt(b, 16))) {
    acc = ((acc << 8) | byte) & 0xfff;
    bits += 8;
    while (bits >= 5) { bits -= 5; data.push((acc >>> bits) & 31); }
  }
  if (bits > 0) data.push((acc << (5 - bits)) & 31);
  const hrp = [..."gm"].map((c) => c.charCodeAt(0));
  const expanded = hrp.map((c) => c >> 5).concat([0], hrp.map((c) => c & 31));
  const mod = (bech32Polymod(expanded.concat(data, [0, 0, 0, 0, 0, 0])) ^ 0x2bc830a3) >>> 0;
  const check = [0, 1, 2, 3, 4, 5].map((i) => (mod >>> (5 * (5 - i))) & 31);
  return "gm1" + data.concat(check).map((d) => BECH32[d]).join("");
};
// An address in a table or a line: its checksummed form shortened, the whole of it on hover.
const who = (hex) => {
  const a = checksummed(hex);
  return el("span", { class: "addr", title: a }, a && a.length > 20 ? `${a.slice(0, 10)}…${a.slice(-6)}` : a);
};
const orDash = (v) => (v === null || v === undefined || v === "" ? "–" : v);

// A card with a label and a value; `key` names the API field it shows (for tests and readers).
const card = (label, value, key, extra = "") =>
  el("div", { class: `card ${extra}` },
    el("div", { class: "label" }, label),
    el("div", { class: "value", "data-api": key }, orDash(value)));

// A card whose value is at a place: the place below it, with its own API field.
const cardAt = (label, value, key, place, placeKey) =>
  el("div", { class: "card" },
    el("div", { class: "label" }, label),
    el("div", { class: "value", "data-api": key }, orDash(value)),
    el("div", { class: "label" }, "at bus ", el("span", { "data-api": placeKey }, orDash(place))));

const table = (caption, headers, rows) => {
  if (!rows.length) return el("p", { class: "empty" }, `${caption}: none yet.`);
  return el("div", { class: "table-wrap" },
    el("table", {},
      el("caption", { class: "label" }, caption),
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) =>
        c instanceof Node ? el("td", {}, c) : el("td", {}, orDash(c))))))));
};

const chart = (src, alt, caption) =>
  el("figure", {}, el("img", { src: `${src}${src.includes("?") ? "&" : "?"}t=${Date.now()}`, alt, width: 900, height: 320 }),
    el("figcaption", {}, caption));

// ---- Signing in: the key stays in this browser (a non-extractable WebCrypto key in memory);
// the node only ever sees signatures. The session token lives in sessionStorage.
const hexBytes = (h) => new Uint8Array((h.match(/../g) || []).map((x) => parseInt(x, 16)));
const bytesHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const b64url = (b) => btoa(String.fromCharCode(...b)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

let signer = null; // {address, key: CryptoKey}

async function importKeyFile(text) {
  let file;
  try { file = JSON.parse(text); } catch (_) { throw new Error("paste the key file's JSON (from `gridmesh keys new`)"); }
  const address = String(file.address || "");
  const secret = String(file.secret_key || "");
  if (file.encrypted) {
    throw new Error("this key file is encrypted: make a plain copy for this browser with `gridmesh keys decrypt --key FILE --out COPY`");
  }
  if (!/^[0-9a-f]{64}$/.test(address) || !/^[0-9a-f]{64}$/.test(secret)) {
    throw new Error("a key file has an address and a secret_key of 64 hex digits each");
  }
  if (!window.crypto || !crypto.subtle) throw new Error("signing needs a secure page: open the dashboard on localhost or over https");
  const key = await crypto.subtle.importKey("jwk",
    { kty: "OKP", crv: "Ed25519", d: b64url(hexBytes(secret)), x: b64url(hexBytes(address)) },
    { name: "Ed25519" }, false, ["sign"]);
  return { address, key };
}

const sign = async (bytes) => new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, signer.key, bytes));

const post = async (path, body, token) => {
  const headers = { "content-type": "application/json", accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  const out = await r.json();
  if (!r.ok) throw new Error(out.message || `${path}: ${r.status}`);
  return out;
};

async function signIn(text) {
  signer = await importKeyFile(text);
  const c = await post("/v1/auth/challenge", { address: signer.address });
  const signature = await sign(hexBytes(c.message));
  const s = await post("/v1/auth/session", { address: signer.address, challenge: c.challenge, signature: bytesHex(signature) });
  sessionStorage.setItem("gridmesh.session", JSON.stringify({ address: s.address, token: s.token }));
}

const session = () => {
  try { return JSON.parse(sessionStorage.getItem("gridmesh.session")); } catch (_) { return null; }
};

const authed = async (path) => {
  const s = session();
  const r = await fetch(path, { headers: { authorization: `Bearer ${s.token}`, accept: "application/json" } });
  if (r.status === 401) { sessionStorage.removeItem("gridmesh.session"); throw new Error("the session ended: sign in again"); }
  return r;
};

// ---- Transactions signed here: the canonical encoding of the node's wire format (Borsh: fixed
// little-endian integers, u32-prefixed strings, one-byte tags; see the ledger's tx module), signed
// over "gridmesh/tx/v1\0" ‖ body, submitted as hex to POST /v1/tx.
class Enc {
  constructor() { this.b = []; }
  u8(v) { this.b.push(v & 255); }
  u32(v) { for (let i = 0; i < 4; i++) this.b.push((v >>> (8 * i)) & 255); }
  u64(v) { let x = BigInt(v); for (let i = 0; i < 8; i++) { this.b.push(Number(x & 255n)); x >>= 8n; } }
  bytes(a) { for (const x of a) this.b.push(x); }
  str(s) { const e = new TextEncoder().encode(s); this.u32(e.length); this.bytes(e); }
}

// A decimal string as an integer with `places` decimals, exactly (no floating point).
function fixed(text, places, what) {
  const t = String(text).trim();
  const m = /^(\d+)(?:\.(\d+))?$/.exec(t);
  if (!m || (m[2] || "").length > places) throw new Error(`${what}: a number with at most ${places} decimals, not "${t}"`);
  return BigInt(m[1]) * 10n ** BigInt(places) + BigInt((m[2] || "").padEnd(places, "0"));
}

async function submitTx(kindWriter) {
  if (!signer) throw new Error("sign in with your key file first (the key signs here, in the browser)");
  const [status, account] = await Promise.all([api("/v1/status"), api(`/v1/accounts/${signer.address}`)]);
  const nonce = Math.max(account.nonce, signer.nextNonce || 0);
  const body = new Enc();
  body.u8(1); body.str(status.chain_id); body.bytes(hexBytes(signer.address)); body.u64(nonce);
  kindWriter(body);
  const domain = new TextEncoder().encode("gridmesh/tx/v1\0");
  const signature = await sign(new Uint8Array([...domain, ...body.b]));
  const accepted = await post("/v1/tx", { tx: bytesHex(new Uint8Array([...body.b, ...signature])) });
  signer.nextNonce = nonce + 1;
  return accepted.hash;
}

// What the reader's last order or cancellation came to, kept across refreshes of the page.
const notes = { "o-note": {}, "cancel-note": {} };
const noteEl = (id) => el("p", { id, role: "status", "data-committed": notes[id].committed }, notes[id].text || "");
const setNote = (id, text, committed) => {
  notes[id] = { text, committed };
  const e = document.getElementById(id);
  if (e) {
    e.textContent = text;
    if (committed) e.dataset.committed = committed; else delete e.dataset.committed;
  }
};

async function waitCommitted(hash, id) {
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`/v1/tx/${hash}`);
    const body = await r.json();
    if (r.ok && body.status === "committed") { setNote(id, `committed in block ${body.height} (transaction ${short(hash)})`, hash); return; }
    if (!r.ok && r.status !== 404) { setNote(id, body.message); return; }
    await new Promise((res) => setTimeout(res, 300));
  }
  setNote(id, `transaction ${short(hash)} is still pending`);
}

function orderForm(m, lastLocation) {
  const field = (id, label, input) => el("label", { for: id }, label, input);
  const side = el("select", { id: "o-side" }, el("option", { value: "0" }, "buy (bid)"), el("option", { value: "1" }, "sell (ask)"));
  // The open slots by the time their delivery starts (the slot's number is the option's value).
  const slot = el("select", { id: "o-slot" }, Array.from({ length: 8 }, (_, k) => {
    const n = m.next_open_slot + k;
    return el("option", k === 2 ? { value: String(n), selected: "" } : { value: String(n) }, slotTime(n));
  }));
  const energy = el("input", { id: "o-energy", inputmode: "decimal", value: "0.5" });
  const price = el("input", { id: "o-price", inputmode: "decimal", value: "0.2" });
  const location = el("input", { id: "o-location", value: lastLocation || "" });
  const key = signer ? null : el("textarea", { id: "o-key", rows: 3, spellcheck: "false", autocomplete: "off" });
  const note = noteEl("o-note");
  const form = el("form", { id: "order" },
    field("o-side", "Side ", side), field("o-slot", "Delivery from ", slot), field("o-energy", "Energy (kWh) ", energy),
    field("o-price", "Price (tokens/kWh) ", price), field("o-location", "Connection (market area) ", location),
    key ? field("o-key", "Your key file (signs here, stays in this browser) ", key) : "",
    el("button", { type: "submit" }, "Place order"), note);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    setNote("o-note", "signing…");
    busy += 1;
    try {
      if (!signer) signer = await importKeyFile(key.value);
      const energyMwh = fixed(energy.value, 3, "energy") * 1000n;
      const priceBase = fixed(price.value, 6, "price");
      if (energyMwh === 0n) throw new Error("energy must be more than 0");
      if (!location.value.trim()) throw new Error("the connection's market area is needed (e.g. t1/s1/h1)");
      const hash = await submitTx((e) => {
        e.u8(2); e.u64(slot.value); e.u8(Number(side.value)); e.u64(energyMwh); e.u64(priceBase); e.str(location.value.trim());
      });
      setNote("o-note", `submitted ${short(hash)}; waiting for its block…`);
      await waitCommitted(hash, "o-note");
    } catch (e) { setNote("o-note", e.message); } finally { busy -= 1; }
  });
  return form;
}

function cancelButton(o) {
  const b = el("button", { type: "button", class: "small", "data-cancel": `${o.slot}/${o.id}` }, "Cancel");
  b.addEventListener("click", async () => {
    busy += 1;
    try {
      const hash = await submitTx((e) => { e.u8(3); e.u64(o.slot); e.u64(o.id); });
      setNote("cancel-note", `cancel submitted ${short(hash)}…`);
      await waitCommitted(hash, "cancel-note");
    } catch (e) { setNote("cancel-note", e.message); } finally { busy -= 1; }
  });
  return b;
}

function signInForm(message) {
  const area = el("textarea", { id: "key", rows: 4, cols: 60, spellcheck: "false", autocomplete: "off",
    "aria-describedby": "key-help" });
  const out = el("p", { class: "error", role: "alert", id: "signin-error" }, message || "");
  // The file the community's operator handed over (e.g. `home-0001.key`), read here.
  const pick = el("input", { type: "file", id: "key-file", accept: ".key,.json,application/json" });
  pick.addEventListener("change", async () => {
    const f = pick.files && pick.files[0];
    if (!f) return;
    if (f.size > 4096) { out.textContent = `${f.name} is not a key file (over 4 kB)`; return; }
    area.value = await f.text();
    out.textContent = "";
    try { await signIn(area.value); area.value = ""; render(); } catch (e) { out.textContent = e.message; }
  });
  const form = el("form", { id: "signin" },
    el("label", { for: "key-file" }, "Your key file "), pick,
    el("p", { id: "key-help", class: "label" },
      "Choose the key file you were given, or paste its JSON below. The key stays in this browser: it signs a challenge here, and the node only sees the signature."),
    el("label", { for: "key" }, "or its JSON"),
    area, el("button", { type: "submit" }, "Sign in"), out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    out.textContent = "";
    try { await signIn(area.value); area.value = ""; render(); } catch (e) { out.textContent = e.message; }
  });
  return [el("h2", {}, "My home"), form];
}

// The signed-in member's orders and the order form (only once signed in: orders are signed
// with the member's own key).
async function myOrders(m) {
  const s = session();
  if (!s) return [el("p", { class: "label" }, "Sign in on My home to place and cancel orders.")];
  const [mine, trades] = await Promise.all([
    api(`/v1/market/orders?owner=${s.address}`), api(`/v1/market/trades?owner=${s.address}`),
  ]);
  const note = noteEl("cancel-note");
  const last = mine.orders.find((o) => o.location);
  return [
    el("h2", {}, "My orders"),
    table("My orders of the last day and the open slots, newest first", ["delivery", "side", "energy (kWh)", "price (tokens/kWh)", "status", "traded (kWh)", ""],
      mine.orders.slice(0, 24).map((o) => [utc(o.delivery_start_ms), o.side, kwh(o.energy_kwh), price(o.price_per_kwh), o.status, kwh(o.traded_kwh),
        o.status === "open" ? cancelButton(o) : ""])),
    note,
    el("h2", {}, "My trades"),
    table("My trades of the last day, newest first", ["delivery", "", "with", "energy (kWh)", "price (tokens/kWh)", "delivered (kWh)", "paid / received (tokens)"],
      trades.trades.slice(0, 24).map((t) => [utc(t.delivery_start_ms), t.side, who(t.counterparty), kwh(t.energy_kwh), price(t.price_per_kwh),
        kwh(t.delivered_kwh), tokens(t.settled_tokens)])),
    el("h2", {}, "Place an order"),
    orderForm(m, last && last.location),
  ];
}

const num = (v, places) => rounded(v, places);
// The one sign convention of battery power, as the API gives it: what a battery draws is positive
// (charging), what it gives negative.
const BATTERY_SIGN = "kW, + charging";

// What the home bought from its neighbours less what it sold them in the live slot, as mean kW
// (null when the page has no row for that slot).
const p2pNowKw = (h, l) => {
  const row = h.slots.find((x) => x.delivery_start_ms === l.slot_start_ms);
  return row ? (Number(row.bought_kwh) - Number(row.sold_kwh)) * 4 : null;
};

// The home's energy flows now, drawn as the energy dashboards owners know (Home Assistant's):
// the sources and sinks around the home, a line each with its power and an arrow the way the
// energy goes; the neighbours trade through the grid. Colours from the page's palette, so the
// picture follows the reader's dark setting. What flows into the home equals what flows out:
// PV + grid = consumption + battery (charging) + EV.
const SVG_NS = "http://www.w3.org/2000/svg";
const svg = (tag, attrs = {}, ...children) => {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
};
const flowPicture = (l, p2pKw) => {
  const at = {
    solar: [120, 55], ev: [400, 55], home: [260, 165],
    grid: [120, 275], battery: [400, 275], neighbours: [120, 385],
  };
  const r = 38;
  const parts = [svg("defs", {}, svg("marker", { id: "flow-arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
    markerWidth: "4", markerHeight: "4", orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "flow-arrowhead" })))];
  // A line from `a` to `b` carrying `kw` (negative: from b to a), labelled in the middle.
  const link = (a, b, kw, key) => {
    const [[x1, y1], [x2, y2]] = [at[a], at[b]];
    const len = Math.hypot(x2 - x1, y2 - y1), ux = (x2 - x1) / len, uy = (y2 - y1) / len;
    const still = Math.abs(kw) < 0.005;
    const [from, to] = kw < 0 ? [[x2, y2, -1], [x1, y1, 1]] : [[x1, y1, 1], [x2, y2, -1]];
    parts.push(svg("line", {
      x1: from[0] + from[2] * ux * r, y1: from[1] + from[2] * uy * r,
      x2: to[0] + to[2] * ux * (r + 4), y2: to[1] + to[2] * uy * (r + 4),
      class: still ? "flow-line still" : "flow-line", ...(still ? {} : { "marker-end": "url(#flow-arrow)" }),
    }));
    // Beside the line's middle: above it, or right of a vertical one.
    let [nx, ny] = [-uy, ux];
    if (ny > 0 || (Math.abs(ny) < 1e-9 && nx < 0)) [nx, ny] = [-nx, -ny];
    const vertical = Math.abs(ux) < 1e-9;
    parts.push(svg("text", { x: (x1 + x2) / 2 + nx * 14, y: (y1 + y2) / 2 + ny * 14 + 4,
      class: "flow-kw", "text-anchor": vertical ? "start" : "middle", "data-flow": key }, `${num(Math.abs(kw), 2)} kW`));
  };
  const node = (k, label, value, key) => {
    const [x, y] = at[k];
    parts.push(svg("circle", { cx: x, cy: y, r, class: `flow-node flow-${k}` }));
    parts.push(svg("text", { x, y: y - 4, class: "flow-name", "text-anchor": "middle" }, label));
    if (value !== undefined) parts.push(svg("text", { x, y: y + 14, class: "flow-kw", "text-anchor": "middle", "data-flow": key }, value));
  };
  link("solar", "home", l.pv_kw, "pv_kw");
  link("grid", "home", l.net_kw, "net_kw");
  link("home", "battery", l.battery_kw, "battery_kw");
  link("home", "ev", l.ev_kw, "ev_kw");
  if (p2pKw !== null) link("neighbours", "grid", p2pKw, "p2p_kw");
  node("solar", "Solar");
  node("ev", "EV");
  node("home", "Home", `${num(l.load_kw, 2)} kW`, "load_kw");
  node("grid", "Grid", l.net_kw >= 0 ? "import" : "export");
  node("battery", "Battery", l.battery_soc_percent === null ? undefined : `${num(l.battery_soc_percent, 0)} %`, "soc");
  if (p2pKw !== null) node("neighbours", "Neighbours");
  const height = p2pKw !== null ? 440 : 330;
  return svg("svg", { viewBox: `0 0 520 ${height}`, class: "flows", role: "img", id: "energy-flows",
    "aria-label": "Energy flows of the home now" }, ...parts);
};
const pct = (v) => (v === null || v === undefined ? null : `${(100 * v).toFixed(1)} %`);

// The feeder's power flow, when something solves it next to this node.
function feederPart(f) {
  if (!f.available) return [el("p", { class: "empty" }, "This node has no live view of the feeder's power flow.")];
  const l = f.latest, d = f.day;
  return [
    el("h2", {}, `The feeder now (${utc(l.slot_start_ms)})`),
    el("div", { class: "cards" },
      card("Exchange with the grid (kW, + import)", num(l.pcc_kw, 1), "feeder.latest.pcc_kw"),
      card("Consumption (kW)", num(l.load_kw, 1), "feeder.latest.load_kw"),
      card("Rooftop PV (kW)", num(l.pv_kw, 1), "feeder.latest.pv_kw"),
      card(`Batteries (${BATTERY_SIGN})`, num(l.battery_kw, 1), "feeder.latest.battery_kw"),
      card("EV charging (kW)", num(l.ev_kw, 1), "feeder.latest.ev_kw"),
      card("Losses (kW)", num(l.losses_kw, 2), "feeder.latest.losses_kw"),
      card("Lowest voltage (pu)", num(l.min_vm_pu, 3), "feeder.latest.min_vm_pu"),
      card("Highest voltage (pu)", num(l.max_vm_pu, 3), "feeder.latest.max_vm_pu"),
      card("Transformer loading (%)", num(l.transformer_loading_percent, 1), "feeder.latest.transformer_loading_percent")),
    el("figure", {}, el("img", { src: `/v1/charts/feeder.svg?t=${Date.now()}`, alt: "Single-line diagram of the feeder: branches coloured by loading, buses by voltage" }),
      el("figcaption", {}, `Branches coloured by loading (blue under 50 %, orange to 100 %, red above); buses red outside ${f.vmin_pu}–${f.vmax_pu} pu.`)),
    ...phasesPart(f),
    el("h2", {}, `The community over the last ${d.slots} slots`),
    el("div", { class: "cards" },
      card("Self-sufficiency", pct(d.self_sufficiency), "feeder.day.self_sufficiency"),
      card("Imported (kWh)", num(d.import_kwh, 1), "feeder.day.import_kwh"),
      card("Exported (kWh)", num(d.export_kwh, 1), "feeder.day.export_kwh"),
      card("Peak import (kW)", num(d.peak_import_kw, 1), "feeder.day.peak_import_kw"),
      card("Peak export (kW)", num(d.peak_export_kw, 1), "feeder.day.peak_export_kw"),
      card("Losses (kWh)", num(d.losses_kwh, 1), "feeder.day.losses_kwh"),
      card("Slots outside the voltage band", d.voltage_band_slots, "feeder.day.voltage_band_slots"),
      card("Slots over the transformer rating", d.overloaded_slots, "feeder.day.overloaded_slots"),
      card("Islanded slots", d.islanded_slots, "feeder.day.islanded_slots")),
  ];
}

// A feeder solved phase by phase: each phase's voltage range, the unbalance, the profile.
function phasesPart(f) {
  const p = f.phases;
  if (!p) return [];
  const phase = (name, r, key) => r
    ? [cardAt(`Phase ${name}: lowest (pu)`, num(r.min_vm_pu, 3), `feeder.phases.${key}.min_vm_pu`, r.min_bus, `feeder.phases.${key}.min_bus`),
       cardAt(`Phase ${name}: highest (pu)`, num(r.max_vm_pu, 3), `feeder.phases.${key}.max_vm_pu`, r.max_bus, `feeder.phases.${key}.max_bus`)]
    : [];
  return [
    el("h2", {}, "Phase by phase"),
    el("div", { class: "cards" },
      ...phase("a", p.a, "a"), ...phase("b", p.b, "b"), ...phase("c", p.c, "c"),
      cardAt("Largest voltage unbalance (%)", num(p.max_unbalance_pct, 2), "feeder.phases.max_unbalance_pct", p.max_unbalance_bus, "feeder.phases.max_unbalance_bus")),
    el("figure", {}, el("img", { src: `/v1/charts/feeder-profile.svg?t=${Date.now()}`, alt: "Voltage profile of the feeder: each phase's voltage against the distance from the source" }),
      el("figcaption", {}, `Each phase's voltage along the feeder; a home on one phase lifts or lowers its own phase most. Limits ${f.vmin_pu}–${f.vmax_pu} pu; unbalance above 2 % breaks EN 50160.`)),
  ];
}

const pages = {
  async home() {
    const s = session();
    if (!s) return signInForm();
    const r = await authed(`/v1/homes/${s.address}?slots=96`);
    if (!r.ok) return signInForm((await r.json()).message);
    const h = await r.json();
    const t = h.totals;
    // The month: the last 31 days the chain still holds.
    const month = await (await authed(`/v1/homes/${s.address}?slots=2976`)).json();
    const mt = month.totals;
    // Charts of the signed-in home come with the session, shown from blobs.
    const privateChart = async (path, alt) => {
      const img = el("img", { alt, width: 900, height: 320 });
      img.src = URL.createObjectURL(await (await authed(path)).blob());
      return img;
    };
    const img = await privateChart(`/v1/homes/${s.address}/flows.svg?slots=96`,
      "Imported, exported, bought and sold energy in kWh per 15-minute slot over the last day");
    const plan = await privateChart(`/v1/homes/${s.address}/plan.svg?slots=96`,
      "The grid exchange the home's orders planned and the one its meter measured, kWh per 15-minute slot over the last day");
    const money = await privateChart(`/v1/homes/${s.address}/money.svg?slots=96`,
      "Tokens spent on the utility and neighbours and earned from feed-in and neighbours, per hour over the last day");
    const out = el("button", { type: "button", id: "signout" }, "Sign out");
    out.addEventListener("click", () => { sessionStorage.removeItem("gridmesh.session"); signer = null; render(); });
    const l = h.live;
    const now = l ? [
      el("h2", {}, `My home now (${utc(l.slot_start_ms)})`),
      el("div", { class: "cards" },
        card("Solar production (kW)", num(l.pv_kw, 2), "home.live.pv_kw"),
        card("Consumption (kW)", num(l.load_kw, 2), "home.live.load_kw"),
        card(`Battery (${BATTERY_SIGN})`, num(l.battery_kw, 2), "home.live.battery_kw"),
        card("Battery charge (%)", num(l.battery_soc_percent, 0), "home.live.battery_soc_percent"),
        card("EV charging (kW)", num(l.ev_kw, 2), "home.live.ev_kw"),
        card("Grid (kW, + import)", num(l.net_kw, 2), "home.live.net_kw")),
      el("figure", {}, flowPicture(l, p2pNowKw(h, l)),
        el("figcaption", {}, "Where the home's energy comes from and goes, mean kW over the slot; the neighbours' line is what the home traded with them in it, through the grid.")),
    ] : [];
    return [
      el("h2", {}, "My home"),
      el("p", { class: "label" }, "Signed in as ", el("span", { class: "addr", id: "signed-in-as" }, checksummed(h.address)), " ", out),
      ...now,
      el("h2", {}, "The last 24 hours"),
      el("div", { class: "cards" },
        card("Balance (tokens)", tokens(h.balance), "home.balance"),
        card("Imported, 24 h (kWh)", kwh(t.import_kwh), "home.totals.import_kwh"),
        card("Exported, 24 h (kWh)", kwh(t.export_kwh), "home.totals.export_kwh"),
        card("Bought from neighbours, 24 h (kWh)", kwh(t.bought_kwh), "home.totals.bought_kwh"),
        card("Sold to neighbours, 24 h (kWh)", kwh(t.sold_kwh), "home.totals.sold_kwh"),
        card("My bill, 24 h (tokens)", tokens(t.bill), "home.totals.bill"),
        card("Utility-only bill, 24 h (tokens)", tokens(t.baseline_bill), "home.totals.baseline_bill"),
        card("Saved, 24 h (tokens)", tokens(t.savings), "home.totals.savings"),
        card("Rewards (tokens)", tokens(t.rewards), "home.totals.rewards")),
      el("h2", {}, `The last 31 days (from ${utc(month.first_slot * 900000)}, as far as the chain keeps)`),
      el("div", { class: "cards" },
        card("Imported (kWh)", kwh(mt.import_kwh), "home_month.totals.import_kwh"),
        card("Exported (kWh)", kwh(mt.export_kwh), "home_month.totals.export_kwh"),
        card("Traded with neighbours (kWh)", kwh(Number(mt.bought_kwh) + Number(mt.sold_kwh)), "home_month.traded_kwh"),
        card("My bill (tokens)", tokens(mt.bill), "home_month.totals.bill"),
        card("Utility-only bill (tokens)", tokens(mt.baseline_bill), "home_month.totals.baseline_bill"),
        card("Saved (tokens)", tokens(mt.savings), "home_month.totals.savings"),
        card("Rewards (tokens)", tokens(mt.rewards), "home_month.totals.rewards")),
      el("h2", {}, "Energy over the last day"),
      el("figure", {}, img, el("figcaption", {}, "Energy per 15-minute slot in kWh: the meter's import and export, and what was traded with neighbours.")),
      el("h2", {}, "Plan and what happened over the last day"),
      el("figure", {}, plan, el("figcaption", {}, "Energy per 15-minute slot in kWh, + import: the exchange with the grid the home's agent planned (what it ordered) and what the meter measured.")),
      el("h2", {}, "Money over the last day"),
      el("figure", {}, money, el("figcaption", {}, "Tokens per hour: spent on the utility and on neighbours (above), earned as feed-in credit and from neighbours (below).")),
      el("h2", {}, "My devices"),
      table("Devices with their own keys, what each said last and their readings' verification", ["device", "kind", "rating (W)", "now (kW, + delivering)", "status", "accepted", "pending", "held (why)"],
        h.devices.map((d) => [who(d.device), d.kind, count(d.capacity_w),
          d.now ? `${num(d.now.power_w / 1000, 2)} at ${utc(d.now.time_ms)}` : "no sample on this node",
          d.status, d.readings_accepted, d.readings_pending,
          d.held.length ? d.held.slice(-3).map((x) => `${slotTime(x.slot)}: ${x.reason}`).join("; ") : "none"])),
      el("h2", {}, "Recent slots"),
      table("Last 12 slots with a reading or a trade, newest first; money in tokens", ["delivery", "import (kWh)", "export (kWh)", "bought (kWh)", "sold (kWh)", "paid", "received", "utility cost", "utility credit"],
        h.slots.slice(-12).reverse().map((r) => [utc(r.delivery_start_ms), kwh(r.import_kwh), kwh(r.export_kwh), kwh(r.bought_kwh), kwh(r.sold_kwh),
          tokens(r.p2p_paid), tokens(r.p2p_received), tokens(r.utility_cost), tokens(r.utility_credit)])),
    ];
  },

  async network() {
    const [status, grid, hist, feeder] = await Promise.all([
      api("/v1/status"), api("/v1/grid"), api("/v1/market/history?slots=96"), api("/v1/grid/feeder"),
    ]);
    const last = hist.rows[hist.rows.length - 1];
    const traded = hist.rows.reduce((s, r) => s + Number(r.volume_kwh), 0);
    return [
      el("h2", {}, "The community's network"),
      el("div", { class: "cards" },
        card("Grid connection", grid.mode, "grid.mode", `mode-${grid.mode}`),
        card("Since", grid.since_ms ? utc(grid.since_ms) : "start", "grid.since_ms"),
        card("Outages recorded", grid.events.filter((e) => e.event === "islanded").length, "grid.islanded_events"),
        card("Block height", count(status.height), "status.height"),
        card("Chain time", utc(status.timestamp_ms), "status.timestamp_ms"),
        card("Consensus", status.consensus, "status.consensus"),
        card("Validators", status.validators, "status.validators"),
        card("Traded last 24 h (kWh)", kwh(traded), "history.volume_kwh_sum"),
        card("Last cleared slot", last ? utc(last.delivery_start_ms) : null, "history.last.delivery_start_ms")),
      ...feederPart(feeder),
      el("h2", {}, "Islanding and reconnection"),
      table("Grid events", ["#", "event", "at", "block"],
        grid.events.slice(-12).reverse().map((e) => [e.seq, e.event, utc(e.at_ms), count(e.height)])),
    ];
  },

  async market() {
    const [m, hist] = await Promise.all([api("/v1/market"), api("/v1/market/history?slots=96")]);
    const rows = hist.rows.slice().reverse();
    const last = rows[0];
    // The depth chart of the next open slot if it has orders, else of the latest cleared one.
    // The order books of the current slot (cleared at its start) and of the next open one.
    const books = [];
    if (last && last.slot === m.current_slot) books.push([m.current_slot, "current slot, as it cleared"]);
    if (m.next_open_orders > 0) books.push([m.next_open_slot, "next open slot, orders so far"]);
    if (!books.length && last) books.push([last.slot, "latest cleared slot"]);
    return [
      el("h2", {}, "Energy market"),
      el("div", { class: "cards" },
        card("Mechanism", m.mechanism, "market.mechanism"),
        card("Current slot", slotTime(m.current_slot), "market.current_slot"),
        card("Next open slot", slotTime(m.next_open_slot), "market.next_open_slot"),
        card("Next gate closure", utc(m.next_gate_closure_ms), "market.next_gate_closure_ms"),
        card("Last price (tokens/kWh)", last && price(last.mean_price_per_kwh), "history.last.mean_price_per_kwh"),
        card("Last volume (kWh)", last && kwh(last.volume_kwh), "history.last.volume_kwh"),
        card("Escrow (tokens)", tokens(m.escrow_balance), "market.escrow_balance")),
      el("h2", {}, "Prices over the last day"),
      chart("/v1/charts/prices.svg?slots=96", "Mean clearing price in tokens per kWh (left axis) and traded volume in kWh (right axis) over the last 96 slots",
        "Clearing price (tokens/kWh, left axis) and volume (kWh, right axis) per 15-minute slot, hours before now."),
      ...(books.length ? books.map(([slot, what]) =>
        chart(`/v1/charts/depth.svg?slot=${slot}`, `Order book of the slot from ${slotTime(slot)}: cumulative bids and asks by price`,
          `Order book of the ${what}, delivery from ${slotTime(slot)}: energy in kWh against price in tokens/kWh.`))
        : [el("p", { class: "empty" }, "No order book yet.")]),
      ...(await myOrders(m)),
      el("h2", {}, "Recent slots"),
      table("Cleared slots, newest first", ["delivery", "orders", "volume (kWh)", "price (tokens/kWh)", "island"],
        rows.slice(0, 24).map((r) => [utc(r.delivery_start_ms), count(r.orders), kwh(r.volume_kwh),
          price(r.mean_price_per_kwh), r.island ? "yes" : "no"])),
    ];
  },

  async ledger() {
    const [status, supply, blocks, latest] = await Promise.all([
      api("/v1/status"), api("/v1/supply"), api("/v1/blocks?limit=15"), api("/v1/blocks/latest"),
    ]);
    return [
      el("h2", {}, "Ledger"),
      el("div", { class: "cards" },
        card("Block height", count(status.height), "status.height"),
        card("Total supply (tokens)", tokens(status.total_supply), "status.total_supply"),
        card("Minted as rewards (tokens)", tokens(supply.minted), "supply.minted"),
        card("Emission cap (tokens)", tokens(supply.emission_cap), "supply.emission_cap"),
        card("Community fund (tokens)", tokens(supply.community_fund), "supply.community_fund"),
        card("Device bonds (tokens)", tokens(supply.device_bonds), "supply.device_bonds"),
        card("Market escrow (tokens)", tokens(supply.escrow), "supply.escrow"),
        card("Supply reconciled", supply.reconciled ? "yes" : "NO", "supply.reconciled")),
      el("h2", {}, "Latest blocks"),
      table("Blocks, newest first", ["height", "time", "transactions", "hash", "proposer"],
        blocks.blocks.map((b) => [count(b.height), utc(b.timestamp_ms), count(b.tx_count),
          el("span", { class: "hash", title: b.hash }, short(b.hash)), who(b.proposer)])),
      el("h2", {}, `Transactions of block ${latest.height}`),
      table(`The first 20 of its ${latest.tx_count} transactions`, ["hash", "kind", "sender", "nonce"],
        latest.txs.slice(0, 20).map((t) => [el("span", { class: "hash", title: t.hash }, short(t.hash)), t.kind, who(t.sender), t.nonce])),
      el("h2", {}, "Validators"),
      table(`${status.consensus === "bft" ? "The validators that agree on every block" : "This node orders the blocks (solo)"}`, ["key"],
        status.validator_set.map((v) => [el("span", { class: "addr", title: checksummed(v) }, checksummed(v))])),
      el("h2", {}, "Rewards per epoch"),
      table("Closed epochs, newest first; tokens", ["epoch", "emission", "minted", "recipients", "paid by community assets"],
        supply.epochs.map((e) => [e.epoch, tokens(e.emission), tokens(e.minted), count(e.recipients), tokens(e.asset_payouts)])),
    ];
  },
};

let current = null;
let rendering = false;
let again = false;
// A form being filled in or a transaction on its way: live refreshes wait.
let busy = 0;
const quiet = () => busy === 0 && !(document.activeElement && document.activeElement.closest("form"));

// `live`: a refresh for a new block, dropped if the reader started something meanwhile (a form
// being filled in, a transaction on its way) so that nothing they see is replaced under them.
async function render(live = false) {
  if (rendering) { again = again || !live; return; }
  rendering = true;
  const name = (location.hash || "#network").slice(1);
  const page = pages[name] ? name : "network";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = document.getElementById("page");
  try {
    const content = await pages[page]();
    if (live && !quiet()) {
      rendering = false;
      if (again) { again = false; render(); }
      return;
    }
    main.replaceChildren(...content);
    main.dataset.page = page;
    main.dataset.loaded = String(Date.now());
  } catch (e) {
    main.replaceChildren(el("p", { class: "error" }, `Could not load this page: ${e.message}`));
  }
  if (current !== page) { current = page; main.focus({ preventScroll: true }); }
  rendering = false;
  if (again) { again = false; render(); }
}

function live() {
  const status = document.getElementById("live");
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/v1/events`);
  let timer = null;
  ws.onmessage = (m) => {
    const e = JSON.parse(m.data);
    if (e.type === "hello") {
      document.getElementById("chain").textContent = `chain ${e.chain_id}`;
    }
    if (e.type === "hello" || e.type === "block") {
      status.className = "up";
      status.textContent = `live · block ${e.height} · ${utc(e.timestamp_ms)}`;
      status.dataset.height = e.height;
    }
    if (e.type === "block" || e.type === "lagged") {
      // At most one refresh a second, however fast blocks come.
      if (!timer) timer = setTimeout(() => { timer = null; if (quiet()) render(true); }, 1000);
    }
  };
  ws.onclose = () => {
    status.className = "down";
    status.textContent = "disconnected; retrying…";
    setTimeout(live, 3000);
  };
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", () => { render(); live(); });
