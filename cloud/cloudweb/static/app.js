// Ferry reference browser client: ferry.v1 over one WebSocket (PROTOCOL.md).
// Plain JavaScript, no build step. Everything shown comes from the user's
// inbox (events) and the service's answers; user data is written with
// textContent only.
"use strict";
(() => {
  const SUBPROTOCOL = "ferry.v1";
  const CLIENT_VERSION = "web-1";
  const STOP_CODES = new Set([4400, 4401, 4403, 4426]); // do not reconnect
  const MAX_MSGS = 500; // kept per conversation in localStorage
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;

  const $ = (sel) => document.querySelector(sel);

  const st = {
    status: "signed-out", // connecting, syncing, live, reconnecting, stopped
    token: "",
    device: "",
    user: "",
    cursor: 0, // last inbox event applied (persisted)
    helloCursor: 0, // cursor sent in this session's hello
    replayed: 0, // events received between welcome and synced in this session
    sessions: 0, // welcomes received since the page loaded
    convs: {}, // id -> {id, peer, name, group, members, msgs: {seq: entry}, receipts: {user: {delivered, read}}}
    outbox: [], // sends not yet acknowledged: {msg_id, to, conv, text}
    selected: "",
    sentDelivered: {}, // conv -> watermark this user reached (any device)
    sentRead: {},
    lastError: "",
    closeCode: 0,
  };
  let ws = null;
  let attempt = 0;
  let retryTimer = 0;
  let refSeq = 0;
  const gapAsked = {}; // conv -> seq asked with history after

  // ---- ids ---------------------------------------------------------------

  // uuidv7 makes a client message id: 48-bit millisecond time, version 7,
  // random rest. crypto.getRandomValues works outside secure contexts too,
  // unlike crypto.randomUUID.
  function uuidv7() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    let ms = Date.now();
    for (let i = 5; i >= 0; i--) {
      b[i] = ms % 256;
      ms = Math.floor(ms / 256);
    }
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function nextRef() {
    refSeq += 1;
    return `w${refSeq}`;
  }

  // tokenSubject reads the user id from the token's claims, unverified: the
  // service verifies; the page only needs it to find its saved state.
  function tokenSubject(token) {
    try {
      let p = token.split(".")[0].replace(/-/g, "+").replace(/_/g, "/");
      while (p.length % 4) p += "=";
      const bin = atob(p);
      const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes)).sub || "";
    } catch (e) {
      return "";
    }
  }

  // ---- persistence -------------------------------------------------------

  function storeKey() {
    return `ferry.web.${tokenSubject(st.token)}.${st.device}`;
  }

  function save() {
    const convs = {};
    for (const [id, c] of Object.entries(st.convs)) {
      const seqs = Object.keys(c.msgs).map(Number).sort((a, b) => a - b).slice(-MAX_MSGS);
      const msgs = {};
      for (const s of seqs) msgs[s] = c.msgs[s];
      convs[id] = { ...c, msgs };
    }
    const data = {
      cursor: st.cursor, convs, outbox: st.outbox, selected: st.selected,
      sentDelivered: st.sentDelivered, sentRead: st.sentRead,
    };
    try {
      localStorage.setItem(storeKey(), JSON.stringify(data));
    } catch (e) {
      showError(`cannot save state: ${e}`);
    }
  }

  function load() {
    let data = null;
    try {
      data = JSON.parse(localStorage.getItem(storeKey()) || "null");
    } catch (e) {
      data = null;
    }
    data = data || {};
    st.cursor = Number(data.cursor) || 0;
    st.convs = data.convs || {};
    st.outbox = data.outbox || [];
    st.selected = data.selected || "";
    st.sentDelivered = data.sentDelivered || {};
    st.sentRead = data.sentRead || {};
  }

  // ---- connection --------------------------------------------------------

  function wsURL() {
    return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/ws`;
  }

  function transmit(frame) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function connect() {
    clearTimeout(retryTimer);
    if (ws) {
      ws.onclose = null;
      ws.close(1000);
    }
    setStatus(attempt === 0 ? "connecting" : "reconnecting");
    const sock = new WebSocket(wsURL(), SUBPROTOCOL);
    ws = sock;
    sock.onopen = () => {
      st.helloCursor = st.cursor;
      transmit({
        type: "hello", token: st.token, device: st.device, platform: "web",
        client_version: CLIENT_VERSION, cursor: st.cursor,
      });
    };
    sock.onmessage = (e) => {
      let f;
      try {
        f = JSON.parse(e.data);
      } catch (err) {
        showError("unreadable frame from the service");
        return;
      }
      handle(f);
    };
    sock.onclose = (e) => {
      if (ws !== sock) return;
      ws = null;
      st.closeCode = e.code;
      let reason = {};
      try {
        reason = e.reason ? JSON.parse(e.reason) : {};
      } catch (err) {
        reason = { reason: e.reason };
      }
      if (STOP_CODES.has(e.code)) {
        setStatus("stopped");
        showError(`closed ${e.code}: ${reason.reason || "refused"}`);
        if (e.code === 4401) sessionStorage.removeItem("ferry.web.token");
        return;
      }
      const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
      const delay = e.code === 1001 && reason.retry_ms > 0
        ? reason.retry_ms
        : backoff / 2 + Math.random() * (backoff / 2);
      attempt += 1;
      setStatus("reconnecting");
      retryTimer = setTimeout(connect, delay);
    };
  }

  // ---- frames from the service ---------------------------------------------

  function handle(f) {
    switch (f.type) {
      case "welcome":
        st.user = f.user;
        st.replayed = 0;
        st.sessions += 1;
        setStatus("syncing");
        break;
      case "event":
        if (f.cursor <= st.cursor) return; // already applied
        if (st.status === "syncing") st.replayed += 1;
        apply(f);
        st.cursor = f.cursor;
        save();
        if (st.status === "live") afterChange();
        render();
        break;
      case "synced":
        attempt = 0;
        if (f.cursor > st.cursor) st.cursor = f.cursor;
        setStatus("live");
        save();
        for (const m of st.outbox) sendFrame(m); // same msg_id: idempotent
        afterChange();
        render();
        break;
      case "ack":
        st.outbox = st.outbox.filter((m) => m.msg_id !== f.msg_id);
        save();
        render();
        break;
      case "page":
        applyPage(f);
        save();
        afterChange();
        render();
        break;
      case "error":
        onError(f);
        break;
      default:
        // presence, presence_snapshot, typing, call_state: not shown by
        // this client yet.
        break;
    }
  }

  function ensureConv(id) {
    if (!st.convs[id]) st.convs[id] = { id, peer: "", name: "", group: false, members: [], msgs: {}, receipts: {} };
    return st.convs[id];
  }

  function raise(obj, key, v) {
    if (!(obj[key] >= v)) obj[key] = v;
  }

  function apply(ev) {
    if (ev.kind === "placeholder") {
      // An entry the service could not send as stored (protocol 6): fetch
      // the message from the log when the placeholder names one.
      if (ev.conv && ev.seq > 0) transmit({ type: "history", ref: nextRef(), conv: ev.conv, after: ev.seq - 1, limit: 1 });
      return;
    }
    const c = ensureConv(ev.conv);
    switch (ev.kind) {
      case "msg":
        if (ev.to) c.peer = ev.from === st.user ? ev.to : ev.from;
        checkGap(c, ev.seq);
        c.msgs[ev.seq] = {
          seq: ev.seq, kind: "msg", msg_id: ev.msg_id, from: ev.from,
          from_device: ev.from_device || "", text: ev.text, at: ev.at,
        };
        if (!st.selected) st.selected = c.id;
        break;
      case "group":
        c.group = true;
        if (ev.op === "create") {
          c.name = ev.name || "";
          c.members = ev.members || [];
        } else if (ev.op === "add") {
          c.members = [...new Set([...c.members, ...(ev.members || [])])];
        } else if (ev.op === "remove") {
          c.members = c.members.filter((m) => !(ev.members || []).includes(m));
        }
        checkGap(c, ev.seq);
        c.msgs[ev.seq] = { seq: ev.seq, kind: "group", from: ev.from, op: ev.op, members: ev.members || [], name: ev.name || "", at: ev.at };
        break;
      case "receipt_up_to": {
        const r = c.receipts[ev.by] || (c.receipts[ev.by] = { delivered: 0, read: 0 });
        raise(r, "delivered", ev.up_to);
        if (ev.status === "read") raise(r, "read", ev.up_to);
        if (ev.by === st.user) {
          raise(st.sentDelivered, c.id, ev.up_to);
          if (ev.status === "read") raise(st.sentRead, c.id, ev.up_to);
        }
        break;
      }
      case "receipt": {
        // Per message (legacy devices through the bridge).
        const m = c.msgs[ev.seq];
        if (m) {
          m.receipts = m.receipts || {};
          if (ev.status === "read" || !m.receipts[ev.by]) m.receipts[ev.by] = ev.status;
        }
        break;
      }
      default:
        break;
    }
  }

  // checkGap asks for the messages between the last one known and seq when
  // a conversation's sequence jumps (PROTOCOL.md: fill gaps with history).
  function checkGap(c, seq) {
    const seqs = Object.keys(c.msgs).map(Number);
    if (seqs.length === 0) return;
    const top = Math.max(...seqs);
    if (seq > top + 1 && !(gapAsked[c.id] >= top)) {
      gapAsked[c.id] = top;
      transmit({ type: "history", ref: nextRef(), conv: c.id, after: top, limit: 100 });
    }
  }

  function applyPage(p) {
    const c = ensureConv(p.conv);
    for (const m of p.msgs || []) {
      if (c.msgs[m.seq]) continue;
      c.msgs[m.seq] = m.kind === "group"
        ? { seq: m.seq, kind: "group", from: m.from, op: m.op, members: m.members || [], name: m.name || "", at: m.at }
        : { seq: m.seq, kind: "msg", msg_id: m.msg_id, from: m.from, from_device: m.from_device || "", text: m.text, at: m.at };
      if (m.kind === "msg" && m.to) c.peer = m.from === st.user ? m.to : m.from;
    }
    for (const r of p.receipts || []) {
      const cur = c.receipts[r.user] || (c.receipts[r.user] = { delivered: 0, read: 0 });
      raise(cur, "delivered", r.delivered || 0);
      raise(cur, "read", r.read || 0);
    }
    if (p.more && p.msgs && p.msgs.length) {
      transmit({ type: "history", ref: nextRef(), conv: p.conv, after: p.msgs[p.msgs.length - 1].seq, limit: 100 });
    }
  }

  function onError(f) {
    showError(`${f.code}: ${f.message}`);
    // A refused send will not succeed when resent; keep only retryable ones.
    if (f.code !== "internal" && f.code !== "unavailable" && f.ref) {
      const m = st.outbox.find((x) => x.ref === f.ref);
      if (m) {
        st.outbox = st.outbox.filter((x) => x !== m);
        save();
        render();
      }
    }
  }

  // ---- requests ----------------------------------------------------------

  function sendFrame(m) {
    m.ref = nextRef();
    const f = { type: "send", ref: m.ref, msg_id: m.msg_id, text: m.text };
    if (m.to) f.to = m.to;
    if (m.conv) f.conv = m.conv;
    transmit(f);
  }

  function compose() {
    const text = $("#text").value;
    if (!text.trim()) return;
    const newTo = $("#to").value.trim();
    const m = { msg_id: uuidv7(), text };
    if (newTo) {
      m.to = newTo;
    } else if (st.selected) {
      const c = st.convs[st.selected];
      if (c.group) m.conv = c.id;
      else {
        m.to = c.peer;
        m.conv = c.id;
      }
    } else {
      showError("choose a conversation or type a user id");
      return;
    }
    st.outbox.push(m);
    save(); // before sending: a reload resends it with the same msg_id
    sendFrame(m);
    $("#text").value = "";
    $("#to").value = "";
    render();
  }

  function topSeq(c) {
    let top = 0;
    for (const s of Object.keys(c.msgs)) top = Math.max(top, Number(s));
    return top;
  }

  function topFromOthers(c) {
    let top = 0;
    for (const m of Object.values(c.msgs)) if (m.from !== st.user) top = Math.max(top, m.seq);
    return top;
  }

  // afterChange sends cumulative receipts: delivered for every conversation
  // with new messages from others, read for the one on screen.
  function afterChange() {
    if (st.status !== "live") return;
    const visible = document.visibilityState !== "hidden";
    for (const c of Object.values(st.convs)) {
      const theirs = topFromOthers(c);
      const top = topSeq(c);
      if (theirs === 0) continue;
      if (visible && c.id === st.selected && !(st.sentRead[c.id] >= theirs)) {
        st.sentRead[c.id] = top;
        raise(st.sentDelivered, c.id, top);
        transmit({ type: "receipt", ref: nextRef(), conv: c.id, up_to: top, status: "read" });
      } else if (!(st.sentDelivered[c.id] >= theirs)) {
        st.sentDelivered[c.id] = top;
        transmit({ type: "receipt", ref: nextRef(), conv: c.id, up_to: top, status: "delivered" });
      }
    }
    save();
  }

  // ---- view ----------------------------------------------------------------

  function setStatus(s) {
    st.status = s;
    const el = $("#status");
    el.dataset.status = s;
    el.textContent = st.user ? `${s} · ${st.user} on ${st.device} · cursor ${st.cursor}` : s;
  }

  function showError(msg) {
    st.lastError = msg;
    $("#error").textContent = msg;
  }

  function convTitle(c) {
    if (c.group) return c.name || `group ${c.id.slice(0, 8)}`;
    return c.peer || c.id;
  }

  // receiptMark says how far the others got with one of this user's messages.
  function receiptMark(c, m) {
    let read = false;
    let delivered = false;
    for (const [user, r] of Object.entries(c.receipts)) {
      if (user === st.user) continue;
      if (r.read >= m.seq) read = true;
      if (r.delivered >= m.seq) delivered = true;
    }
    for (const s of Object.values(m.receipts || {})) {
      if (s === "read") read = true;
      delivered = true;
    }
    if (read) return "read";
    if (delivered) return "delivered";
    return "sent";
  }

  function render() {
    setStatus(st.status);
    const signedIn = st.status !== "signed-out";
    $("#signin").hidden = signedIn;
    $("#app").hidden = !signedIn;
    $("#signout").hidden = !signedIn;

    const list = $("#convs");
    list.replaceChildren();
    const convs = Object.values(st.convs).sort((a, b) => lastAt(b).localeCompare(lastAt(a)));
    for (const c of convs) {
      const li = document.createElement("li");
      li.dataset.conv = c.id;
      li.setAttribute("aria-selected", String(c.id === st.selected));
      const name = document.createElement("span");
      name.textContent = convTitle(c);
      li.append(name);
      const unread = Object.values(c.msgs).filter((m) => m.from !== st.user && m.seq > (st.sentRead[c.id] || 0)).length;
      if (unread > 0) {
        const u = document.createElement("span");
        u.className = "unread";
        u.textContent = String(unread);
        li.append(u);
      }
      li.addEventListener("click", () => {
        st.selected = c.id;
        save();
        afterChange();
        render();
      });
      list.append(li);
    }

    const c = st.convs[st.selected];
    $("#conv-title").textContent = c ? convTitle(c) : "No conversation selected";
    const ol = $("#msgs");
    ol.replaceChildren();
    if (c) {
      for (const m of Object.values(c.msgs).sort((a, b) => a.seq - b.seq)) {
        const li = document.createElement("li");
        li.dataset.seq = String(m.seq);
        const meta = document.createElement("span");
        meta.className = "meta";
        if (m.kind === "group") {
          li.className = "change";
          li.textContent = m.op === "create"
            ? `${m.from} created ${m.name || "the group"}`
            : `${m.from} ${m.op === "add" ? "added" : "removed"} ${m.members.join(", ")}`;
        } else {
          const mine = m.from === st.user;
          li.className = mine ? "mine" : "theirs";
          li.dataset.msgId = m.msg_id;
          const text = document.createElement("span");
          text.className = "text";
          text.textContent = m.text;
          li.append(text);
          const mark = mine ? receiptMark(c, m) : "";
          if (mine) li.dataset.receipt = mark;
          meta.textContent = `${mine ? "" : `${m.from} · `}${(m.at || "").slice(11, 16)}${mine ? ` · ${mark}` : ""}`;
          li.append(meta);
        }
        ol.append(li);
      }
      ol.scrollTop = ol.scrollHeight;
    }
    const pending = st.outbox.filter((m) => !c || m.conv === c.id || (!m.conv && m.to));
    $("#pending").textContent = pending.length ? `sending ${pending.length}…` : "";
  }

  function lastAt(c) {
    let at = "";
    for (const m of Object.values(c.msgs)) if ((m.at || "") > at) at = m.at;
    return at;
  }

  // ---- sign-in -----------------------------------------------------------

  function signIn(token, device) {
    st.token = token.trim();
    st.device = device.trim();
    if (!st.token || !st.device) {
      showError("token and device are required");
      return;
    }
    sessionStorage.setItem("ferry.web.token", st.token);
    localStorage.setItem("ferry.web.device", st.device);
    load();
    attempt = 0;
    setStatus("connecting");
    render();
    connect();
  }

  function signOut() {
    clearTimeout(retryTimer);
    sessionStorage.removeItem("ferry.web.token");
    if (ws) {
      ws.onclose = null;
      ws.close(1000);
      ws = null;
    }
    st.token = "";
    st.user = "";
    st.convs = {};
    st.outbox = [];
    setStatus("signed-out");
    render();
  }

  function start() {
    $("#signin-btn").addEventListener("click", () => signIn($("#token").value, $("#device").value));
    $("#signout").addEventListener("click", signOut);
    $("#send").addEventListener("click", compose);
    $("#text").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        compose();
      }
    });
    document.addEventListener("visibilitychange", afterChange);
    // Leaving the page ends the session at once (the service then reports
    // this device offline); coming back from the back/forward cache resumes.
    window.addEventListener("pagehide", () => {
      clearTimeout(retryTimer);
      if (ws) {
        ws.onclose = null;
        ws.close(1000);
        ws = null;
      }
    });
    window.addEventListener("pageshow", (e) => {
      if (e.persisted && st.token) connect();
    });

    let device = localStorage.getItem("ferry.web.device");
    if (!device) device = `web-${uuidv7().slice(-12)}`;
    $("#device").value = device;

    // "#token=...&device=..." signs in directly; the token leaves the
    // address bar at once.
    const frag = new URLSearchParams(location.hash.slice(1));
    if (frag.get("token")) {
      history.replaceState(null, "", location.pathname + location.search);
      signIn(frag.get("token"), frag.get("device") || device);
      return;
    }
    const saved = sessionStorage.getItem("ferry.web.token");
    if (saved) {
      signIn(saved, device);
      return;
    }
    render();
  }

  window.ferry = {
    // state returns a snapshot for tests and debugging (no token).
    state() {
      return {
        status: st.status, user: st.user, device: st.device, cursor: st.cursor,
        helloCursor: st.helloCursor, replayed: st.replayed, sessions: st.sessions,
        closeCode: st.closeCode, lastError: st.lastError, outbox: st.outbox.length,
        selected: st.selected,
        convs: Object.values(st.convs).map((c) => ({
          id: c.id, peer: c.peer, name: c.name, group: c.group, receipts: c.receipts,
          msgs: Object.values(c.msgs).sort((a, b) => a.seq - b.seq).map((m) => ({
            seq: m.seq, kind: m.kind, msg_id: m.msg_id, from: m.from, from_device: m.from_device,
            text: m.text, receipt: m.kind === "msg" && m.from === st.user ? receiptMark(c, m) : "",
          })),
        })),
      };
    },
  };

  start();
})();
