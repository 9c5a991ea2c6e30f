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

  // ---- persistence -------------------------------------------------------

  // storeKey names the saved state of this user and device. The token is
  // opaque to the page: the user is the one the service named in welcome
  // (remembered with the token in this tab's sessionStorage), so before the
  // first welcome of a new token there is no key and nothing to save.
  function storeKey() {
    return st.user ? `ferry.web.${st.user}.${st.device}` : "";
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
    if (!storeKey()) return;
    try {
      localStorage.setItem(storeKey(), JSON.stringify(data));
    } catch (e) {
      showError(`cannot save state: ${e}`);
    }
  }

  function load() {
    let data = null;
    try {
      data = storeKey() ? JSON.parse(localStorage.getItem(storeKey()) || "null") : null;
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
        if (f.user !== st.user) {
          // A new token: its saved state is known now. The hello asked for
          // everything (cursor 0); events up to the saved cursor are skipped.
          st.user = f.user;
          sessionStorage.setItem("ferry.web.user", st.user);
          load();
        }
        showNotice(f.notice || ""); // v7: the version policy's warning
        st.replayed = 0;
        st.sessions += 1;
        liveReset();
        setStatus("syncing");
        break;
      case "event":
        if (f.cursor <= st.cursor) return; // already applied
        if (st.status === "syncing") st.replayed += 1;
        apply(f);
        if (f.kind === "msg") endTyping(f.conv, f.from);
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
        presenceAfterSync();
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
      case "presence":
        onPresence(f);
        renderLive();
        break;
      case "presence_snapshot":
        for (const p of f.presences || []) onPresence(p);
        renderLive();
        break;
      case "typing":
        onTyping(f);
        break;
      case "call_state":
        onCallState(f);
        break;
      default:
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
          file: ev.file || null,
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
      case "system":
        // v7: a note the service wrote (a notice from ferry-notices, or
        // "alice moved to the new app"), shown as a note, never receipted.
        if (ev.to) c.peer = ev.from === st.user ? ev.to : ev.from;
        checkGap(c, ev.seq);
        c.msgs[ev.seq] = { seq: ev.seq, kind: "system", from: ev.from, text: ev.text, at: ev.at };
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
      case "undeliverable":
        // v8: the bridge gave up on one of this user's messages (its
        // recipient's classic-app devices stayed unreachable): mark it.
        (c.undelivered || (c.undelivered = {}))[ev.seq] = ev.reason || "expired";
        break;
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
        : m.kind === "system"
        ? { seq: m.seq, kind: "system", from: m.from, text: m.text, at: m.at }
        : { seq: m.seq, kind: "msg", msg_id: m.msg_id, from: m.from, from_device: m.from_device || "", text: m.text, at: m.at, file: m.file || null };
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
    stopTyping();
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

  // ---- presence, typing, calls (live only: PROTOCOL.md v4-v6) -------------

  const IDLE_AFTER_MS = 60000; // no input for this long: publish idle
  // Input re-publishes active at most this often: the service orders a
  // callee's devices by their last activity when a call rings.
  const ACTIVE_REFRESH_MS = 15000;
  const TYPING_RENEW_MS = 3000; // typing true at most this often while typing
  const TYPING_STOP_MS = 4000; // no keystroke for this long: typing false
  const TYPING_EXPIRE_MS = 6000; // a typing true not renewed is over after this
  const CALL_ENDED_SHOW_MS = 5000; // an ended call stays on screen this long
  const PRESENCE_RANK = { active: 2, idle: 1, offline: 0 };
  const CALL_REASONS = {
    answered: "answered", answered_elsewhere: "answered on another device",
    rejected: "declined", cancelled: "cancelled", hangup: "hung up",
    timeout: "not answered", unavailable: "nobody available",
  };

  const live = {
    me: "", // presence this device last published (or the service set)
    meSentAt: 0, // when this page last sent presence active
    idleAfter: IDLE_AFTER_MS,
    idleTimer: 0,
    presence: {}, // "user\ndevice" -> {user, device, state, at}
    typing: {}, // conv -> {user: expiry (ms)}
    typingTimer: 0,
    typingConv: "", // conversation this page said it is typing in
    typingSentAt: 0,
    typingStopTimer: 0,
    typingSent: 0,
    call: null, // {id, from, from_device, to, media, incoming, state, reason, device, ringingHere, rang, seen, dismissed}
    callTimer: 0,
  };

  // liveReset starts a session with everyone offline and nobody typing
  // (presence_snapshot follows); the service counts the new session as
  // activity, so this device is active.
  function liveReset() {
    live.presence = {};
    live.typing = {};
    live.me = "active";
    live.meSentAt = 0;
    live.typingConv = "";
  }

  function presenceAfterSync() {
    if (document.visibilityState === "hidden") goIdle();
    else armIdle();
  }

  function setPresence(state) {
    if (!transmit({ type: "presence", state })) return;
    live.me = state;
    if (state === "active") live.meSentAt = Date.now();
    renderLive();
  }

  function armIdle() {
    clearTimeout(live.idleTimer);
    live.idleTimer = setTimeout(goIdle, live.idleAfter);
  }

  // activity is a user's input or focus: the device is active again (or
  // still), and goes idle after idleAfter without any.
  function activity() {
    if (st.status !== "live" || document.visibilityState === "hidden") return;
    armIdle();
    if (live.me !== "active" || Date.now() - live.meSentAt >= ACTIVE_REFRESH_MS) setPresence("active");
  }

  function goIdle() {
    clearTimeout(live.idleTimer);
    if (st.status === "live" && live.me !== "idle") setPresence("idle");
  }

  // onPresence keeps, per device, the presence with the latest at: a live
  // presence may overtake the snapshot.
  function onPresence(p) {
    if (!p.user || !p.device || (p.user === st.user && p.device === st.device)) return;
    const k = `${p.user}\n${p.device}`;
    const cur = live.presence[k];
    if (cur && (cur.at || "") > (p.at || "")) return;
    live.presence[k] = { user: p.user, device: p.device, state: p.state, at: p.at || "" };
  }

  // userPresence sums a user's devices: active beats idle beats offline.
  function userPresence(user) {
    let best = "offline";
    for (const p of Object.values(live.presence)) {
      if (p.user === user && (PRESENCE_RANK[p.state] || 0) > PRESENCE_RANK[best]) best = p.state;
    }
    return best;
  }

  function onTyping(f) {
    if (f.user === st.user) return; // this user's other device
    const t = live.typing[f.conv] || (live.typing[f.conv] = {});
    if (f.typing) t[f.user] = Date.now() + TYPING_EXPIRE_MS;
    else delete t[f.user];
    renderLive();
  }

  function endTyping(conv, user) {
    if (live.typing[conv]) delete live.typing[conv][user];
  }

  function typingIn(conv) {
    const now = Date.now();
    return Object.entries(live.typing[conv] || {}).filter(([, exp]) => exp > now).map(([u]) => u).sort();
  }

  // onInput says "typing" in the conversation on screen: true at most
  // every TYPING_RENEW_MS while keys come, false when the text is emptied,
  // sent, or left alone for TYPING_STOP_MS. That stays well inside the
  // service's rate limit (shared with presence: 2/s, bursts of 10).
  function onInput() {
    activity();
    const c = st.convs[st.selected];
    if (!c || st.status !== "live" || $("#to").value.trim()) return;
    if (!$("#text").value.trim()) {
      stopTyping();
      return;
    }
    clearTimeout(live.typingStopTimer);
    live.typingStopTimer = setTimeout(stopTyping, TYPING_STOP_MS);
    const now = Date.now();
    if (live.typingConv === c.id && now - live.typingSentAt < TYPING_RENEW_MS) return;
    if (live.typingConv && live.typingConv !== c.id) sendTyping(live.typingConv, false);
    if (sendTyping(c.id, true)) {
      live.typingConv = c.id;
      live.typingSentAt = now;
    }
  }

  function stopTyping() {
    clearTimeout(live.typingStopTimer);
    if (!live.typingConv) return;
    sendTyping(live.typingConv, false);
    live.typingConv = "";
    live.typingSentAt = 0;
  }

  function sendTyping(conv, typing) {
    if (!transmit({ type: "typing", conv, typing })) return false;
    live.typingSent += 1;
    return true;
  }

  // onCallState follows one call at a time: a frame of another call
  // replaces it only once it has ended.
  function onCallState(f) {
    let c = live.call;
    if (!c || c.id !== f.call_id) {
      if (c && c.state !== "ended") return;
      c = live.call = {
        id: f.call_id, from: f.from, from_device: f.from_device || "", to: f.to, media: f.media || "",
        incoming: f.to === st.user, state: "", reason: "", device: "", ringingHere: false, rang: [], seen: false, dismissed: false,
      };
    }
    c.state = f.state;
    c.reason = f.reason || "";
    if (f.device) c.device = f.device;
    const ringing = f.ringing || [];
    if (f.state === "ringing") c.rang.push(ringing);
    // A callee device rings if and only if the service lists it.
    c.ringingHere = f.state === "ringing" && c.incoming && ringing.includes(st.device);
    clearTimeout(live.callTimer);
    if (f.state === "ended") {
      live.callTimer = setTimeout(() => {
        c.dismissed = true;
        renderLive();
      }, CALL_ENDED_SHOW_MS);
    }
    renderLive();
  }

  function callAction(op) {
    const c = live.call;
    if (!c || c.state === "ended") return;
    activity();
    transmit({ type: "call", ref: nextRef(), op, call_id: c.id });
  }

  function startCall() {
    const conv = st.convs[st.selected];
    if (!conv || conv.group || !conv.peer || (live.call && live.call.state !== "ended")) return;
    activity();
    transmit({ type: "call", ref: nextRef(), op: "invite", call_id: uuidv7(), to: conv.peer, media: "audio" });
  }

  // callHere reports whether this device takes part in the call: the
  // answering callee device, or the calling device.
  function callHere(c) {
    return c.incoming ? c.device === st.device : c.from_device === st.device;
  }

  function callText(c) {
    const other = c.incoming ? c.from : c.to;
    if (c.state === "ringing") return c.incoming ? `Incoming call from ${other}` : `Calling ${other}…`;
    if (c.state === "active") {
      if (callHere(c)) return `In call with ${other}`;
      return c.incoming ? `Call from ${other} answered on ${c.device}` : `${c.from_device} is in a call with ${other}`;
    }
    return `Call with ${other} ended: ${CALL_REASONS[c.reason] || c.reason}`;
  }

  function renderLive() {
    const box = $("#call");
    const c = live.call;
    // A callee device shows a ringing call only while it rings itself;
    // an ended call only if it showed the call before.
    const show = Boolean(c && !c.dismissed && (c.state === "ringing" ? c.ringingHere || callHere(c) : c.state === "active" || c.seen));
    if (show) c.seen = true;
    box.dataset.state = show ? c.state : "";
    box.classList.toggle("ringing", show && c.ringingHere);
    // The tab's title tells a user on another tab that this one rings.
    document.title = show && c.ringingHere ? `Incoming call from ${c.from} · Ferry` : "Ferry";
    $("#call-text").textContent = show ? callText(c) : "";
    $("#call-answer").hidden = !(show && c.ringingHere);
    $("#call-decline").hidden = !(show && c.ringingHere);
    $("#call-hangup").hidden = !(show && c.state !== "ended" && !c.ringingHere && callHere(c));

    const conv = st.convs[st.selected];
    const people = [];
    if (conv) {
      const others = conv.group ? conv.members.filter((m) => m !== st.user) : [conv.peer].filter(Boolean);
      for (const u of others) people.push(`${u} ${userPresence(u)}`);
    }
    const mine = Object.values(live.presence).filter((p) => p.user === st.user && p.state !== "offline")
      .map((p) => `${p.device} ${p.state}`).sort();
    if (mine.length) people.push(`your other devices: ${mine.join(", ")}`);
    $("#presence").textContent = people.join(" · ");
    $("#call-start").hidden = !(conv && !conv.group && conv.peer);
    for (const li of document.querySelectorAll("#convs li[data-conv]")) {
      const cv = st.convs[li.dataset.conv];
      if (cv && !cv.group && cv.peer) li.dataset.presence = userPresence(cv.peer);
    }

    const who = conv ? typingIn(conv.id) : [];
    const text = who.length === 0 ? "" : `${who.join(", ")} ${who.length === 1 ? "is" : "are"} typing…`;
    if ($("#typing").textContent !== text) $("#typing").textContent = text;
    // Re-render when the next typing indication expires.
    clearTimeout(live.typingTimer);
    let next = Infinity;
    for (const t of Object.values(live.typing)) for (const exp of Object.values(t)) if (exp > Date.now()) next = Math.min(next, exp);
    if (next < Infinity) live.typingTimer = setTimeout(renderLive, next - Date.now() + 10);
  }

  // ---- view ----------------------------------------------------------------

  // showNotice shows what the version policy tells this client (welcome
  // notice, v7) above the page, or hides it when there is nothing.
  function showNotice(text) {
    let el = document.getElementById("notice");
    if (!el) {
      el = document.createElement("div");
      el.id = "notice";
      el.setAttribute("role", "status");
      document.body.prepend(el);
    }
    el.textContent = text;
    el.hidden = !text;
  }

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
    if (c.undelivered && c.undelivered[m.seq]) return "undeliverable";
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
      const unread = unreadCount(c);
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
        } else if (m.kind === "system") {
          li.className = "change system";
          li.textContent = m.text;
        } else {
          const mine = m.from === st.user;
          li.className = mine ? "mine" : "theirs";
          li.dataset.msgId = m.msg_id;
          const text = document.createElement("span");
          text.className = "text";
          text.textContent = m.text;
          li.append(text);
          if (m.file) li.append(fileLink(m.file));
          const mark = mine ? receiptMark(c, m) : "";
          if (mine) li.dataset.receipt = mark;
          else li.dataset.read = String(m.seq <= (st.sentRead[c.id] || 0));
          meta.textContent = `${mine ? "" : `${m.from} · `}${(m.at || "").slice(11, 16)}${mine ? ` · ${mark === "undeliverable" ? "not delivered" : mark}` : ""}`;
          li.append(meta);
        }
        ol.append(li);
      }
      ol.scrollTop = ol.scrollHeight;
    }
    const pending = st.outbox.filter((m) => !c || m.conv === c.id || (!m.conv && m.to));
    $("#pending").textContent = pending.length ? `sending ${pending.length}…` : "";
    renderLive();
  }

  // fileLink is a message's attachment (protocol 9) as a link: the
  // download needs the session token in a header, so a click fetches the
  // bytes and hands them to the browser as a download.
  function fileLink(file) {
    const a = document.createElement("a");
    a.className = "file";
    a.href = `/v1/files/${encodeURIComponent(file.id)}`;
    a.download = file.name;
    a.textContent = `📎 ${file.name} (${fileSize(file.size)})`;
    a.addEventListener("click", async (e) => {
      e.preventDefault();
      try {
        const resp = await fetch(a.href, { headers: { Authorization: `Bearer ${st.token}` } });
        if (!resp.ok) throw new Error(`${resp.status} ${(await resp.text()).trim()}`);
        const url = URL.createObjectURL(await resp.blob());
        const dl = document.createElement("a");
        dl.href = url;
        dl.download = file.name;
        dl.click();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
      } catch (err) {
        showError(`download of ${file.name} failed: ${err.message}`);
      }
    });
    return a;
  }

  function fileSize(n) {
    if (n < 1024) return `${n} bytes`;
    if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / (1 << 20)).toFixed(1)} MiB`;
  }

  function unreadCount(c) {
    return Object.values(c.msgs).filter((m) => m.kind === "msg" && m.from !== st.user && m.seq > (st.sentRead[c.id] || 0)).length;
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
    const sameToken = sessionStorage.getItem("ferry.web.token") === st.token;
    st.user = sameToken ? sessionStorage.getItem("ferry.web.user") || "" : "";
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
    sessionStorage.removeItem("ferry.web.user");
    if (ws) {
      ws.onclose = null;
      ws.close(1000);
      ws = null;
    }
    st.token = "";
    st.user = "";
    st.convs = {};
    st.outbox = [];
    liveReset();
    live.me = "";
    live.call = null;
    clearTimeout(live.idleTimer);
    clearTimeout(live.typingStopTimer);
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
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") goIdle();
      else activity();
    });
    window.addEventListener("focus", activity);
    for (const ev of ["pointerdown", "keydown", "wheel", "touchstart"]) {
      document.addEventListener(ev, activity, { passive: true, capture: true });
    }
    $("#text").addEventListener("input", onInput);
    $("#call-answer").addEventListener("click", () => callAction("answer"));
    $("#call-decline").addEventListener("click", () => callAction("reject"));
    $("#call-hangup").addEventListener("click", () => callAction("hangup"));
    $("#call-start").addEventListener("click", startCall);
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
        me: live.me,
        presence: Object.values(live.presence).map(({ user, device, state }) => ({ user, device, state })),
        typing: Object.fromEntries(Object.keys(live.typing).map((conv) => [conv, typingIn(conv)])),
        typingSent: live.typingSent,
        call: live.call && {
          id: live.call.id, from: live.call.from, to: live.call.to, state: live.call.state,
          reason: live.call.reason, device: live.call.device, incoming: live.call.incoming,
          ringingHere: live.call.ringingHere, rang: live.call.rang,
        },
        convs: Object.values(st.convs).map((c) => ({
          id: c.id, peer: c.peer, name: c.name, group: c.group, receipts: c.receipts, unread: unreadCount(c),
          msgs: Object.values(c.msgs).sort((a, b) => a.seq - b.seq).map((m) => ({
            seq: m.seq, kind: m.kind, msg_id: m.msg_id, from: m.from, from_device: m.from_device,
            text: m.text, receipt: m.kind === "msg" && m.from === st.user ? receiptMark(c, m) : "",
            read: m.kind === "msg" && m.from !== st.user && m.seq <= (st.sentRead[c.id] || 0),
          })),
        })),
      };
    },
    // setIdleAfter changes how long the page waits without input before it
    // publishes idle (tests; the default is a minute).
    setIdleAfter(ms) {
      live.idleAfter = ms;
      if (st.status === "live" && live.me === "active") armIdle();
    },
  };

  start();
})();
