// devclaw's work loop: a gateway service that runs the dev -> QA pipeline with no orchestrator turn.
//
// Every loop.tickSeconds (and right after every completion) it asks `devclaw serve` for a `tick`
// (devclaw/loop.py: reconcile with the live sessions, then task_pickup for every free worker slot), starts
// each dispatched task as a worker run (api.runtime.subagent.run) in a stable session per project, role and
// slot, records that session with task_pickup_confirm, waits for the run to end, reads the worker's final
// reply and completes the task with task_complete (DONE: / PASS: / FAIL: / REFINE:), with the run's usage.
// All state changes go through devclaw's own tools and requests; this file decides nothing about labels.
//
// Rules this file keeps (an unhandled rejection exits the whole gateway):
// 1. every promise started here has its own .catch; ticks never overlap and each is bounded by a timeout;
// 2. a run's liveness is judged from its session entry, never from waitForRun's "timeout";
// 3. what must survive a gateway restart (runs in flight, redispatch counts, QA feedback) is in
//    memory/loop.json, rewritten atomically; loop_status and `devclaw doctor` read the same file.

import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const LOOP_DEFAULTS = Object.freeze({
  enabled: false,
  tickSeconds: 60,
  tickTimeoutSeconds: 300,
  maxRedispatch: 2,
  agentId: "main",
  announce: true,
  checkTracker: true,
  projects: {},
});

const WAIT_CHUNK_MS = 15000; // one waitForRun; liveness is re-read from the session entry between chunks
const START_RETRY_MS = 60000; // run() refuses with UNAVAILABLE for a while after gateway start
const SESSION_GONE_WAIT_S = 10; // how long an ended run's session may take to vanish when it was deleted
// Times a verdict refused for want of a (merged) change is handed back to the worker: DEV can open or merge one;
// QA cannot, so its refused PASS goes to Refining at once.
const CHANGE_ASKS = { dev: 2 };
export const MESSAGE_LIMIT = 500; // messages read back from a session (getSessionMessages' limit)
// Each role's results, as devclaw/workflow.py's ROLES spells them (tests/test_plugin_manifest.py compares).
export const VERDICTS = {
  dev: { DONE: "done" },
  qa: { PASS: "pass", FAIL: "fail", REFINE: "refine" },
  reviewer: { APPROVE: "approve", REJECT: "reject", REFINE: "refine" },
};
const VERDICT_ASK = {
  dev: "Reply with exactly one line: DONE: <what you changed>.",
  qa: "Reply with exactly one line: PASS: <what you verified>, FAIL: <what is wrong>, or REFINE: <the question a human must decide>.",
  reviewer: "Reply with exactly one line: APPROVE: <why it is right>, REJECT: <what must change>, or REFINE: <the question a human must decide>.",
};

/** The loop settings from plugins.entries.devclaw.config.loop, with defaults. */
export function loopConfig(config) {
  const loop = { ...LOOP_DEFAULTS, ...(config?.loop ?? {}) };
  loop.enabled = loop.enabled === true;
  return loop;
}

/** Reject after `ms`; the wrapped promise keeps running, so it needs its own .catch. */
export function withTimeout(promise, ms, label) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label}: timed out after ${ms / 1000} s`)), ms);
    timer.unref?.();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A tick every `intervalMs`, never two at once: the next is scheduled when one settles or times out.
 * `trigger()` runs one now (or right after the one running). A throw, a rejection or a hang never stops it.
 */
export function createTickLoop({ intervalMs, tickTimeoutMs, tick, onResult = () => {} }) {
  let timer = null;
  let running = false;
  let again = false;
  let stopped = false;
  let number = 0;
  let nextAt = null;
  const schedule = (delay) => {
    if (stopped) return;
    clearTimeout(timer);
    nextAt = Date.now() + delay;
    timer = setTimeout(() => runOne().catch(() => {}), delay);
    timer.unref?.();
  };
  const runOne = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    again = false;
    const started = Date.now();
    const current = ++number;
    let outcome;
    try {
      const work = Promise.resolve().then(() => tick(current));
      work.catch(() => {}); // abandoned after its timeout, it may still reject later
      outcome = { number: current, ok: true, at: new Date(started).toISOString(), ms: 0, value: await withTimeout(work, tickTimeoutMs, `tick ${current}`) };
    } catch (error) {
      outcome = { number: current, ok: false, at: new Date(started).toISOString(), ms: 0, error: String(error?.message ?? error) };
    }
    outcome.ms = Date.now() - started;
    running = false;
    schedule(again ? 0 : intervalMs);
    try {
      onResult(outcome);
    } catch {
      /* a broken reporter must not stop the loop */
    }
  };
  return {
    start: (delayMs = 0) => schedule(delayMs),
    trigger: () => (running ? (again = true) : schedule(0)),
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    get nextAt() {
      return nextAt;
    },
  };
}

/** The fix task's line for the feedback that sent the work back (a plain string: QA's, as saved before). */
export function feedbackText(feedback) {
  const { from, text } = typeof feedback === "string" ? { from: "QA", text: feedback } : feedback;
  return from === "review" ? `The review asked for this; fix it: ${text}` : `QA found this on the last attempt; fix it: ${text}`;
}

/** The verdict in a worker's final reply: the last line starting with one of the role's words. */
export function parseVerdict(text, role) {
  const words = VERDICTS[role] ?? {};
  const lines = String(text ?? "").split(/\r?\n/).reverse();
  for (const line of lines) {
    const match = /^\s*(?:\*\*)?([A-Z]+)(?:\*\*)?\s*:\s*(.*)$/.exec(line);
    if (match && words[match[1]]) return { result: words[match[1]], summary: match[2].replace(/\*\*$/, "").trim() };
  }
  return null;
}

export function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((part) => (part?.type === "text" ? part.text : "")).join("");
  return "";
}

/** Sum of the assistant messages' usage (OpenClaw's shape) in devclaw's convention; cost null when unpriced. */
export function sumUsage(messages, into = null) {
  const total = into ?? { input: 0, output: 0, cacheRead: 0, cacheWrite: 0, cost: null, model: null };
  for (const message of messages) {
    if (message?.role !== "assistant" || !message.usage) continue;
    for (const key of ["input", "output", "cacheRead", "cacheWrite"]) total[key] += Number(message.usage[key]) || 0;
    const cost = Number(message.usage.cost?.total);
    if (Number.isFinite(cost) && message.usage.cost) total.cost = (total.cost ?? 0) + cost;
    if (message.model) total.model = message.provider ? `${message.provider}/${message.model}` : message.model;
  }
  return total;
}

/** A sumUsage total as task_complete's `usage` parameter: the fields that are known, none that is null. */
export function usageParam(total) {
  return total ? Object.fromEntries(Object.entries(total).filter(([, value]) => value !== null)) : undefined;
}

export function sessionKey(agentId, groupId, role, slot) {
  const project = String(groupId).replace(/[^A-Za-z0-9]+/g, "_").replace(/^_+|_+$/g, "") || "project";
  return `agent:${agentId}:subagent:devclaw-${project}-${role}-${slot}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms).unref?.());

export class WorkLoop {
  #api;
  #bridge;
  #config;
  #workspace;
  #log;
  #ticks = null;
  #inFlight = new Map(); // sessionKey -> record
  #feedback = {}; // "groupId#issue" -> {from: "QA" or "review", text}: what sent it back, added to the fix task
  #lastTick = null;
  #adapter; // undefined: not looked up yet; null: no telegram channel loaded
  #stopped = false;
  #saidDefaultModel = false;

  constructor({ api, bridge, config, workspace, logger }) {
    this.#api = api;
    this.#bridge = bridge;
    this.#config = config;
    this.#workspace = workspace;
    this.#log = logger ?? console;
  }

  get statusPath() {
    return join(this.#workspace, "memory", "loop.json");
  }

  start() {
    this.#restore();
    for (const record of this.#inFlight.values()) this.#follow(record);
    const loop = this.#config;
    this.#ticks = createTickLoop({
      intervalMs: loop.tickSeconds * 1000,
      tickTimeoutMs: loop.tickTimeoutSeconds * 1000,
      tick: () => this.tick(),
      onResult: (outcome) => this.#onTick(outcome),
    });
    this.#ticks.start(1000);
    this.#log.info?.(`devclaw: work loop on (every ${loop.tickSeconds} s, workspace ${this.#workspace})`);
    if (!this.modelOverrideAllowed()) this.#sayDefaultModel();
    this.#save();
  }

  stop() {
    this.#stopped = true;
    this.#ticks?.stop();
    this.#save();
  }

  modelOverrideAllowed() {
    const entry = this.#api.runtime?.config?.current?.()?.plugins?.entries?.devclaw;
    return entry?.subagent?.allowModelOverride === true;
  }

  /** One pass: reconcile and pick up through devclaw, then start a worker run for each dispatch. */
  async tick() {
    const activeSessions = [...new Set([...this.#liveSessions(), ...this.#inFlight.keys()])];
    const result = await this.#bridge.call("tick", { activeSessions, checkTracker: this.#config.checkTracker }, this.#workspace);
    for (const review of result.reviews ?? []) await this.#reviewed(review); // before the dispatches it may feed
    for (const dispatch of result.dispatches) {
      await this.#dispatch(dispatch).catch((error) => this.#log.warn?.(`devclaw: dispatch of #${dispatch.issueId} failed: ${error.message}`));
    }
    for (const skip of result.skipped) this.#log.warn?.(`devclaw: tick skipped ${skip.project} (${skip.type}): ${skip.reason}`);
    return { dispatches: result.dispatches.length, skipped: result.skipped.length, fixes: result.health?.fixesApplied ?? 0 };
  }

  /** A review check of the tick (review policy "human"): its move is announced; a reviewer's words go to the fix task. */
  async #reviewed(review) {
    if (review.error) this.#log.warn?.(`devclaw: review check of ${review.project} #${review.issueId} failed: ${review.error}`);
    if (!review.labelTransition) return;
    if (review.feedback) this.#feedback[`${review.groupId}#${review.issueId}`] = { from: "review", text: review.feedback };
    if (review.announcement) await this.#announce(review.groupId, review.announcement);
  }

  #liveSessions() {
    try {
      const entries = this.#api.runtime.agent.session.listSessionEntries({ agentId: this.#config.agentId }) ?? [];
      return entries.map((item) => item.sessionKey);
    } catch (error) {
      this.#log.warn?.(`devclaw: could not list sessions (${error.message}); no worker is judged dead this tick`);
      return [];
    }
  }

  async #dispatch(d) {
    const key = sessionKey(this.#config.agentId, d.groupId, d.role, d.slot ?? 0);
    const fromLabel = String(d.labelTransition ?? "").split(" → ")[0] || null;
    let message = d.taskMessage;
    const feedback = this.#feedback[`${d.groupId}#${d.issueId}`];
    if (fromLabel === "To Improve" && feedback) message += `\n\n${feedbackText(feedback)}`;
    const record = {
      groupId: d.groupId, project: d.project, role: d.role, slot: d.slot ?? 0, issueId: d.issueId, sessionKey: key,
      runId: null, startedAt: new Date().toISOString(), redispatches: 0, followUps: 0, changeAsks: 0, fromLabel,
      firstLine: String(d.taskMessage).split("\n")[0], usage: null, offset: await this.#messageCount(key),
      idempotencyKey: `devclaw:${key}:${d.issueId}:${Date.now()}`,
    };
    let note = "";
    try {
      note = await this.#startRun(record, message, d.fullModel);
    } catch (error) {
      await this.#release(record, "queue", `the worker run could not be started: ${error.message}`);
      return;
    }
    this.#inFlight.set(key, record);
    this.#save();
    // issueId names the slot: with two workers of a role active, the confirm would not know which one.
    await this.#bridge.call("task_pickup_confirm", { projectGroupId: d.groupId, role: d.role, sessionId: key, issueId: d.issueId }, this.#workspace);
    await this.#announce(d.groupId, d.announcement + note);
    this.#follow(record);
  }

  /** run() on the chosen model when allowed (else the default, said in the note); retried while UNAVAILABLE. */
  async #startRun(record, message, fullModel) {
    const params = { sessionKey: record.sessionKey, message, deliver: false, idempotencyKey: record.idempotencyKey };
    let note = "";
    if (fullModel && this.modelOverrideAllowed()) {
      try {
        const started = await this.#run({ ...params, model: fullModel });
        record.runId = started.runId;
        return "";
      } catch (error) {
        note = ` · ${fullModel} was refused (${error.message}); running on the default model`;
        params.idempotencyKey += ":default";
        record.idempotencyKey = params.idempotencyKey;
      }
    } else if (fullModel) {
      note = " · on the default model (model override not allowed)";
    }
    const started = await this.#run(params);
    record.runId = started.runId;
    return note;
  }

  async #run(params) {
    const deadline = Date.now() + START_RETRY_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#api.runtime.subagent.run(params);
      } catch (error) {
        if (error?.code !== "UNAVAILABLE" || Date.now() > deadline || this.#stopped) throw error;
        await sleep(Math.min(1000 * attempt, 5000));
      }
    }
  }

  async #messageCount(key) {
    try {
      return (await this.#api.runtime.subagent.getSessionMessages({ sessionKey: key, limit: MESSAGE_LIMIT }))?.messages?.length ?? 0;
    } catch {
      return 0; // no such session yet
    }
  }

  #entry(key) {
    return this.#api.runtime.agent.session.getSessionEntry({ sessionKey: key, agentId: this.#config.agentId });
  }

  /** Watch a run to its end in the background; every failure is caught and logged. */
  #follow(record) {
    this.#watch(record).catch((error) => this.#log.warn?.(`devclaw: watching ${record.sessionKey} failed: ${error.message}`));
  }

  async #watch(record) {
    const runId = record.runId;
    while (!this.#stopped && this.#inFlight.get(record.sessionKey) === record && record.runId === runId) {
      const began = Date.now();
      const waited = await this.#api.runtime.subagent.waitForRun({ runId, timeoutMs: WAIT_CHUNK_MS }).catch((error) => ({ status: "error", error }));
      if (record.runId !== runId) return; // a follow-up run took over
      const aborted = waited.status === "error" && /abort/i.test(String(waited.error?.message ?? waited.error ?? ""));
      // Aborted: wait for the entry to go (a deleted session is the reconcile's to fix, an abort alone ours
      // to release); ended in error: wait for it to stop running or go.
      const entry = aborted ? await this.#entryOnce(record.sessionKey, (e) => !e)
        : waited.status === "error" ? await this.#entryOnce(record.sessionKey, (e) => !e || e.status !== "running")
        : this.#entry(record.sessionKey);
      if (!entry) return this.#sessionGone(record);
      if (aborted) return this.#release(record, "queue", "the worker run was aborted");
      if (waited.status === "ok" || waited.status === "error") return this.#ended(record, waited.status);
      // "timeout"/"pending" also answers for a runId from before a restart: ask the session entry instead.
      if (entry.status === "done" || entry.status === "failed") return this.#ended(record, entry.status === "done" ? "ok" : "error");
      if (Date.now() - began < 1000) await sleep(2000);
    }
  }

  /** The session entry once `settled(entry)` holds, or as it is after SESSION_GONE_WAIT_S: a session being
   *  deleted shows first as a run that ended in error or was aborted, and its entry goes a moment later. */
  async #entryOnce(key, settled) {
    for (let i = 0; i < SESSION_GONE_WAIT_S; i++) {
      const entry = this.#entry(key);
      if (settled(entry)) return entry;
      await sleep(1000);
    }
    return this.#entry(key);
  }

  #sessionGone(record) {
    // Deleted while it worked: the next tick's reconcile sees the session missing and returns the issue.
    this.#log.warn?.(`devclaw: session ${record.sessionKey} is gone; #${record.issueId} returns to its queue on the next tick`);
    this.#forget(record);
    this.#ticks?.trigger();
  }

  async #ended(record, status) {
    const messages = (await this.#api.runtime.subagent.getSessionMessages({ sessionKey: record.sessionKey, limit: MESSAGE_LIMIT }))?.messages ?? [];
    const mine = messages.slice(Math.min(record.offset, messages.length));
    record.offset = messages.length;
    record.usage = sumUsage(mine, record.usage);
    if (status !== "ok") return this.#redispatch(record);
    const assistants = mine.filter((m) => m?.role === "assistant");
    const reply = assistants.length ? textOf(assistants[assistants.length - 1].content) : "";
    const verdict = parseVerdict(reply, record.role);
    if (verdict) return this.#complete(record, verdict);
    if (record.followUps < 1) {
      record.followUps += 1;
      return this.#send(record, `${record.firstLine}\nYour last reply stated no verdict. ${VERDICT_ASK[record.role]}`);
    }
    return this.#release(record, "refining", "the worker's reply stated no verdict, also after one follow-up asking for it");
  }

  async #redispatch(record) {
    if (record.redispatches >= this.#config.maxRedispatch) {
      return this.#release(record, "refining", `the worker run was interrupted ${record.redispatches + 1} times (loop.maxRedispatch is ${this.#config.maxRedispatch})`);
    }
    record.redispatches += 1;
    this.#log.info?.(`devclaw: run for #${record.issueId} was interrupted; sending it again into ${record.sessionKey} (${record.redispatches}/${this.#config.maxRedispatch})`);
    return this.#send(record, `${record.firstLine}\nYour run was interrupted (the gateway restarted). Continue the task where you left off. When finished: ${VERDICT_ASK[record.role]}`);
  }

  async #send(record, message) {
    record.idempotencyKey = `devclaw:${record.sessionKey}:${record.issueId}:${Date.now()}`;
    let started;
    try {
      started = await this.#run({ sessionKey: record.sessionKey, message, deliver: false, idempotencyKey: record.idempotencyKey });
    } catch (error) {
      return this.#release(record, "queue", `the follow-up run could not be started: ${error.message}`);
    }
    record.runId = started.runId;
    this.#save();
    this.#follow(record);
  }

  async #complete(record, verdict) {
    const usage = usageParam(record.usage);
    const params = { role: record.role, result: verdict.result, projectGroupId: record.groupId, issueId: record.issueId, summary: verdict.summary || undefined, usage };
    let result;
    try {
      result = await this.#bridge.call("task_complete", params, this.#workspace);
    } catch (error) {
      if (error.type === "change_required") return this.#askForChange(record, error.message);
      this.#log.warn?.(`devclaw: task_complete for #${record.issueId} failed: ${error.message}`);
      this.#forget(record);
      return;
    }
    const key = `${record.groupId}#${record.issueId}`;
    const text = verdict.summary || "(no details given)";
    if (verdict.result === "fail") this.#feedback[key] = { from: "QA", text };
    else if (verdict.result === "reject") this.#feedback[key] = { from: "review", text };
    else if (verdict.result === "pass") delete this.#feedback[key];
    this.#forget(record);
    await this.#announce(record.groupId, result.announcement);
    this.#ticks?.trigger(); // the next hop starts now, not at the next interval
  }

  /** DEV done was refused for want of a merged change: nothing moved and the worker is still active, so
   *  the refusal (what was found, the exact next step) goes back into its session; after CHANGE_ASKS
   *  refusals the task goes to Refining, saying why. */
  async #askForChange(record, refusal) {
    const asked = record.changeAsks ?? 0;
    const asks = CHANGE_ASKS[record.role] ?? 0;
    if (asked >= asks) {
      return this.#release(record, "refining", `the ${record.role} verdict was refused ${asked + 1} time${asked ? "s" : ""}: ${refusal}`);
    }
    record.changeAsks = asked + 1;
    this.#log.info?.(`devclaw: ${record.role} verdict for #${record.issueId} refused; asking the worker (${record.changeAsks}/${asks})`);
    return this.#send(record, `${record.firstLine}\nYour verdict was not accepted. ${refusal}\nDo that step; devclaw completes the task from your reply. ${VERDICT_ASK[record.role]}`);
  }

  async #release(record, to, reason) {
    const params = { projectGroupId: record.groupId, role: record.role, issueId: record.issueId, to, reason, fromLabel: record.fromLabel ?? undefined };
    try {
      const result = await this.#bridge.call("loop_release", params, this.#workspace);
      await this.#announce(record.groupId, result.announcement);
    } catch (error) {
      this.#log.warn?.(`devclaw: could not release #${record.issueId} (${error.message}); session_health will reconcile it`);
    }
    this.#forget(record);
    this.#ticks?.trigger();
  }

  #forget(record) {
    if (this.#inFlight.get(record.sessionKey) === record) this.#inFlight.delete(record.sessionKey);
    this.#save();
  }

  async #announce(groupId, text) {
    const loop = this.#config;
    if (!text || loop.announce === false || loop.projects?.[groupId]?.announce === false) return;
    const adapter = await this.#telegram();
    if (!adapter) return;
    try {
      await adapter.sendText({ cfg: this.#api.runtime.config.current(), to: String(groupId), text });
    } catch (error) {
      this.#log.warn?.(`devclaw: announcement to ${groupId} failed: ${error.message}`);
    }
  }

  async #telegram() {
    if (this.#adapter === undefined) {
      try {
        this.#adapter = (await this.#api.runtime.channel?.outbound?.loadAdapter?.("telegram")) ?? null;
      } catch {
        this.#adapter = null;
      }
      if (!this.#adapter) this.#log.info?.("devclaw: no telegram channel loaded; announcements stay on the audit log");
      this.#save();
    }
    return this.#adapter;
  }

  #sayDefaultModel() {
    if (this.#saidDefaultModel) return;
    this.#saidDefaultModel = true;
    this.#log.info?.("devclaw: plugins.entries.devclaw.subagent.allowModelOverride is not set: workers run on the default model");
  }

  #onTick(outcome) {
    const { value, ...rest } = outcome;
    this.#lastTick = { ...rest, ...(value ?? {}) };
    if (!outcome.ok) this.#log.warn?.(`devclaw: tick ${outcome.number} failed: ${outcome.error}`);
    this.#save();
  }

  #restore() {
    let saved;
    try {
      saved = JSON.parse(readFileSync(this.statusPath, "utf8"));
    } catch {
      return; // first start, or no readable file: nothing in flight
    }
    this.#feedback = saved.feedback && typeof saved.feedback === "object" ? saved.feedback : {};
    for (const record of Array.isArray(saved.inFlight) ? saved.inFlight : []) {
      if (record?.sessionKey && record.runId) this.#inFlight.set(record.sessionKey, { ...record, offset: Number(record.offset) || 0 });
    }
    if (this.#inFlight.size) this.#log.info?.(`devclaw: ${this.#inFlight.size} worker run(s) in flight before the restart; following them`);
  }

  /** memory/loop.json, atomically (temp file + rename); failures are logged, never thrown. */
  #save() {
    const status = {
      version: 1,
      enabled: !this.#stopped,
      pid: process.pid,
      updatedAt: new Date().toISOString(),
      tickSeconds: this.#config.tickSeconds,
      lastTick: this.#lastTick,
      nextTickAt: this.#ticks?.nextAt ? new Date(this.#ticks.nextAt).toISOString() : null,
      modelOverride: this.modelOverrideAllowed(),
      announceChannel: this.#adapter === undefined ? null : Boolean(this.#adapter),
      inFlight: [...this.#inFlight.values()],
      feedback: this.#feedback,
    };
    try {
      mkdirSync(join(this.#workspace, "memory"), { recursive: true });
      const tmp = `${this.statusPath}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(status) + "\n");
      renameSync(tmp, this.statusPath);
    } catch (error) {
      this.#log.warn?.(`devclaw: could not write ${this.statusPath}: ${error.message}`);
    }
  }
}
