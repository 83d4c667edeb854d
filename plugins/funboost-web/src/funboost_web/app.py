"""The web manager: a Starlette application with server-rendered pages (Jinja2), a JSON API under ``/api``
and Prometheus ``/metrics``, all behind the same authentication.

Every read and control goes through :class:`funboost.admin.QueueAdmin` (state backend + broker plugins),
so the manager never imports user code. Blocking calls (state backend, brokers) run in Starlette's thread
pool; handlers stay ``async`` only to parse forms.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from funboost.admin import BrokerUnknown, DeadLetterFilter, QueueAdmin, audit_log, read_audit
from funboost.timeseries import WINDOWS
from funboost_web import jobs as jobs_mod
from funboost_web import validate as check
from funboost_web.auth import ROLES, LoginLimiter, Principal, UserStore
from funboost_web.segments import KeepEncodedSlashes
from funboost_web.validate import RequestError

HERE = Path(__file__).parent
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SESSION_MAX_AGE = 12 * 3600
MAX_RPC_WAIT = 60.0  # seconds: the longest a publish request waits for its result


def _finite(value: Any) -> Any:
    """``value`` with every NaN / Infinity float as its text ("nan", "inf", "-inf"): strict JSON (what a
    browser parses) has no such numbers, and funboost keeps them exactly in arguments and results."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class JSONResponse(_StarletteJSONResponse):
    """Starlette's JSON response, also for records holding NaN / Infinity (Starlette refuses them: a 500)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # "Out of range float values are not JSON compliant"
            return super().render(_finite(content))


class WebConfig:
    """What the command line decides."""

    def __init__(self, admin: QueueAdmin, *, https: bool = False, login_max_failures: int = 5,
                 login_window: float = 300.0, rpc_wait: float = 10.0) -> None:
        self.admin = admin
        self.https = https
        self.limiter = LoginLimiter(login_max_failures, login_window)
        self.rpc_wait = rpc_wait


# ============================================================================ helpers
def _fmt_time(t: Any) -> str:
    if not t:
        return "-"
    try:
        return _dt.datetime.fromtimestamp(float(t)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OSError):
        return str(t)


def _fmt_secs(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    if v < 1e-3:
        return f"{v * 1e6:.0f} µs"
    if v < 1:
        return f"{v * 1e3:.1f} ms"
    if v < 120:
        return f"{v:.2f} s"
    return f"{v / 60:.1f} min"


def _fmt_count(v: Any) -> str:
    return "unknown" if v is None else str(v)


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(ftime=_fmt_time, fsecs=_fmt_secs, fcount=_fmt_count,
                             tojson_pretty=lambda v: json.dumps(v, indent=2, ensure_ascii=False, default=repr),
                             kwargs=lambda env: {k: v for k, v in env.items() if k != "extra"})
templates.env.globals["urlencode"] = urlencode
templates.env.globals["quote"] = lambda s: quote(str(s), safe="")


def _cfg(request: Request) -> WebConfig:
    return request.app.state.cfg


def _admin(request: Request) -> QueueAdmin:
    return _cfg(request).admin


def _users(request: Request) -> UserStore:
    return request.app.state.users


def _csrf_token(request: Request) -> str:
    tok = request.session.get("csrf")
    if not tok:
        tok = request.session["csrf"] = secrets.token_urlsafe(24)
    return tok


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/metrics"


async def _authenticate(request: Request) -> Optional[Principal]:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return await run_in_threadpool(_users(request).check_token, auth[7:].strip())
    name = request.session.get("user")
    if not name:
        return None
    users = _users(request)

    def lookup() -> Optional[dict]:
        user = users.get(name)  # the role in force now (or a deleted user)
        # the session must still be open on the server: a logged-out cookie replayed is refused
        if user is None or not users.session_alive(request.session.get("sid"), name):
            return None
        return user

    user = await run_in_threadpool(lookup)
    if user is None or user.get("hash", "")[-16:] != request.session.get("pwv"):
        request.session.clear()
        return None
    return Principal(name, user["role"], "session")


def requires(role: str) -> Callable:
    """Route decorator: authentication (session or bearer token), the role, and CSRF on state changes made
    with a session cookie. Unauthenticated: pages redirect to /login, the API answers 401."""

    def deco(fn: Callable[..., Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(fn)
        async def wrapper(request: Request) -> Response:
            who = await _authenticate(request)
            if who is None:
                if _is_api(request):
                    return JSONResponse({"error": "authentication required"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(nxt, safe='')}", status_code=303)
            request.state.who = who
            form: dict = {}
            if request.method not in SAFE_METHODS:
                ctype = request.headers.get("content-type", "")
                if "application/json" in ctype:
                    try:
                        form = await request.json()
                    except (ValueError, RecursionError):  # (RecursionError: nesting deeper than the parser goes)
                        return _error(request, 400, "the body is not valid JSON")
                    if not isinstance(form, dict):
                        return _error(request, 400, "the body must be a JSON object")
                else:
                    raw = await request.form()
                    form = {k: raw.getlist(k) if len(raw.getlist(k)) > 1 else raw.get(k) for k in raw.keys()}
                if who.via == "session":
                    sent = request.headers.get("x-csrf-token") or form.get("csrf") or ""
                    if not (isinstance(sent, str) and secrets.compare_digest(sent, request.session.get("csrf", "-"))):
                        return _error(request, 403, "missing or wrong CSRF token")
            request.state.form = form
            if not who.can(role):
                return _error(request, 403, f"this needs the {role} role (you are {who.role})")
            try:
                return await fn(request)
            except RequestError as exc:  # bad input found anywhere in the handler: a 4xx with its message
                return _error(request, exc.status, str(exc))

        wrapper.required_role = role  # type: ignore[attr-defined]
        return wrapper

    return deco


def _error(request: Request, status: int, message: str) -> Response:
    if _is_api(request):
        return JSONResponse({"error": message}, status_code=status)
    return _render(request, "error.html", {"status": status, "message": message}, status=status)


def _render(request: Request, name: str, ctx: dict, status: int = 200) -> Response:
    who = getattr(request.state, "who", None)
    base = {"who": who, "csrf": _csrf_token(request), "partial": request.query_params.get("_partial") == "1",
            "path": request.url.path, "flash": request.session.pop("flash", None)}
    resp = templates.TemplateResponse(request, name, {**base, **ctx}, status_code=status)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _flash(request: Request, text: str, kind: str = "ok") -> None:
    request.session["flash"] = {"text": text, "kind": kind}


def _back(request: Request, default: str) -> RedirectResponse:
    return RedirectResponse(check.local_path(request.state.form.get("back"), default), status_code=303)


# ============================================================================ login
async def login_page(request: Request) -> Response:
    return _render(request, "login.html", {"next": request.query_params.get("next", "/queues"), "error": None})


async def login_post(request: Request) -> Response:
    cfg = _cfg(request)
    raw = await request.form()
    form = {k: raw.get(k) for k in raw.keys()}
    sent = form.get("csrf") or ""
    if not secrets.compare_digest(str(sent), request.session.get("csrf", "-")):
        return _render(request, "login.html", {"next": "/queues", "error": "the form expired; try again"}, 403)
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    keys = (f"ip:{_client(request)}", f"user:{name}")
    wait = cfg.limiter.retry_after(*keys)
    if wait > 0:
        resp = _render(request, "login.html", {"next": form.get("next") or "/queues",
                                               "error": f"too many failed logins; try again in {wait:.0f} s"}, 429)
        resp.headers["Retry-After"] = str(int(wait) + 1)
        return resp
    who = await run_in_threadpool(_users(request).check, name, password)
    if who is None:
        cfg.limiter.failed(*keys)
        return _render(request, "login.html", {"next": form.get("next") or "/queues",
                                               "error": "wrong user name or password"}, 401)
    cfg.limiter.succeeded(*keys)
    user = await run_in_threadpool(_users(request).get, name) or {}
    sid = await run_in_threadpool(_users(request).open_session, name, SESSION_MAX_AGE)
    request.session.clear()  # a new session (and CSRF token) on login: no fixation
    request.session.update({"user": name, "sid": sid, "pwv": str(user.get("hash", ""))[-16:],
                            "csrf": secrets.token_urlsafe(24)})
    return RedirectResponse(check.local_path(form.get("next"), "/queues"), status_code=303)  # never off-site


@requires("viewer")
async def logout(request: Request) -> Response:
    sid = request.session.get("sid")
    if sid:  # ended on the server: the cookie is worthless from now on, even replayed
        await run_in_threadpool(_users(request).close_session, sid)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# ============================================================================ queues
_rows_memo: dict[int, tuple[float, list]] = {}
_rows_lock = threading.Lock()
ROWS_TTL = 1.0  # seconds: every tab polling the queues page within it shares one read


def queue_summaries(admin: QueueAdmin) -> list:
    """admin.summaries(), shared for ROWS_TTL seconds (the queues page, its JSON and /metrics)."""
    now = time.monotonic()
    with _rows_lock:
        hit = _rows_memo.get(id(admin))
        if hit is not None and now - hit[0] < ROWS_TTL:
            return hit[1]
    rows = admin.summaries()
    with _rows_lock:
        _rows_memo[id(admin)] = (time.monotonic(), rows)
    return rows


def _queue_rows(admin: QueueAdmin) -> list[dict]:
    return [s.as_dict() for s in queue_summaries(admin)]


def _forget_rows(admin: QueueAdmin) -> None:
    with _rows_lock:
        _rows_memo.pop(id(admin), None)


@requires("viewer")
async def queues_page(request: Request) -> Response:
    rows = await run_in_threadpool(_queue_rows, _admin(request))
    return _render(request, "queues.html", {"rows": rows})


@requires("viewer")
async def api_queues(request: Request) -> Response:
    return JSONResponse({"queues": await run_in_threadpool(_queue_rows, _admin(request))})


def _queue_detail(admin: QueueAdmin, queue: str) -> dict:
    rec = admin.record(queue)
    summ = admin.summaries([queue])
    return {"queue": queue, "record": rec, "summary": summ[0].as_dict() if summ else None,
            "consumers": admin.consumers(queue), "flags": admin.flags(queue),
            "applied": summ[0].applied if summ else admin.applied_all(queue)}


@requires("viewer")
async def queue_page(request: Request) -> Response:
    q = request.path_params["queue"]
    d = await run_in_threadpool(_queue_detail, _admin(request), q)
    if d["record"] is None and not d["consumers"]:
        return _error(request, 404, f"no queue {q!r} is known")
    return _render(request, "queue.html", d)


@requires("viewer")
async def api_queue(request: Request) -> Response:
    q = request.path_params["queue"]
    d = await run_in_threadpool(_queue_detail, _admin(request), q)
    if d["record"] is None and not d["consumers"]:
        return JSONResponse({"error": f"no queue {q!r} is known"}, status_code=404)
    return JSONResponse(d)


# the actions of a queue, by every name they are posted under -> the one name they have
QUEUE_ACTIONS = {"pause": "pause", "resume": "resume", "clear": "clear", "qps": "qps", "set_qps": "qps",
                 "concurrency": "concurrency", "set_concurrency": "concurrency", "concurrent_num": "concurrency"}


def _queue_known(admin: QueueAdmin, queue: str) -> bool:
    """What the queue page calls known: a catalog record or a live consumer."""
    return admin.record(queue) is not None or bool(admin.consumers(queue))


def _do_queue_action(admin: QueueAdmin, who: Principal, queue: str, action: str, value: Any) -> tuple[str, Any]:
    """``action`` (a key of QUEUE_ACTIONS) on a known queue, with ``value`` checked first: nothing is written
    for an unknown queue (404) or a value that is not what the action takes (400)."""
    kind = QUEUE_ACTIONS[action]
    # checked before the queue is looked up or anything written
    rate = check.qps(value) if kind == "qps" else None
    workers = check.concurrency(value) if kind == "concurrency" else 0
    if not _queue_known(admin, queue):
        raise RequestError(f"no queue {queue!r} is known", 404)
    if kind == "pause":
        admin.pause(queue)
        res: Any = True
    elif kind == "resume":
        admin.resume(queue)
        res = False
    elif kind == "clear":
        res = admin.clear(queue)
    elif kind == "qps":
        admin.set_qps(queue, rate)
        res = rate
    else:
        admin.set_concurrency(queue, workers)
        res = workers
    audit_log(admin.state, who.name, f"queue.{action}", queue, res if kind == "clear" else None,
              {"value": res} if kind in ("qps", "concurrency") else {})
    _forget_rows(admin)  # the next page shows the change
    return action, res


@requires("operator")
async def queue_action(request: Request) -> Response:
    q = request.path_params["queue"]
    form = request.state.form
    action = request.path_params.get("action") or check.text(form, "action", "")
    if action not in QUEUE_ACTIONS:
        raise RequestError(f"unknown action {action!r}; one of {sorted(set(QUEUE_ACTIONS.values()))}")
    # the value: "value", or the field named after the action (the queues page's one form per row)
    value = form.get("value", form.get({"set_qps": "qps", "set_concurrency": "concurrency",
                                        "concurrent_num": "concurrency"}.get(action, action)))
    try:
        _, res = await run_in_threadpool(_do_queue_action, _admin(request), request.state.who, q, action, value)
    except RequestError as exc:
        if _is_api(request) or exc.status == 404:
            raise
        _flash(request, f"{action} failed: {exc}", "error")
        return _back(request, f"/queues/{quote(q, safe='')}")
    except (ValueError, BrokerUnknown) as exc:
        if _is_api(request):
            return JSONResponse({"error": str(exc)}, status_code=400)
        _flash(request, f"{action} failed: {exc}", "error")
        return _back(request, f"/queues/{quote(q, safe='')}")
    if _is_api(request):
        flag = {"pause": "pause", "resume": "pause", "qps": "qps", "set_qps": "qps", "concurrency": "concurrent_num",
                "set_concurrency": "concurrent_num", "concurrent_num": "concurrent_num"}.get(action)
        applied = (await run_in_threadpool(_admin(request).applied, q, flag)).as_dict() if flag else None
        return JSONResponse({"queue": q, "action": action, "result": res, "applied": applied})
    _flash(request, f"{action} on {q}: done" + (f" ({res} messages dropped)" if action == "clear" else
                                                "; consumers pick it up within a few seconds"))
    return _back(request, f"/queues/{quote(q, safe='')}")


# ============================================================================ charts
def _series(admin: QueueAdmin, queue: Optional[str], window: str) -> dict:
    pts = admin.series(queue or None, window)
    return {"queue": queue, "window": window, "t": [p.t for p in pts], "runs": [p.runs for p in pts],
            "failures": [p.failures for p in pts], "avg": [p.avg for p in pts], "p50": [p.p50 for p in pts],
            "p95": [p.p95 for p in pts], "depth": [p.depth for p in pts]}


@requires("viewer")
async def api_series(request: Request) -> Response:
    window = request.query_params.get("window", "60s")
    if window not in WINDOWS:
        return JSONResponse({"error": f"window must be one of {list(WINDOWS)}"}, status_code=400)
    return JSONResponse(await run_in_threadpool(_series, _admin(request), request.query_params.get("queue"), window))


@requires("viewer")
async def charts_page(request: Request) -> Response:
    names = await run_in_threadpool(_admin(request).queue_names)
    return _render(request, "charts.html", {"queues": names, "queue": request.query_params.get("queue", ""),
                                            "windows": list(WINDOWS)})


# ============================================================================ results
def _search_args(qp: Any) -> dict:
    status = check.text(qp, "status", "")
    if status not in ("", "success", "failure"):
        raise RequestError(f"status must be success or failure, got {status!r}")
    before = None
    cursor = check.text(qp, "before")
    if cursor:  # "<time_start>|<task_id>", as the "older" link carries it
        t, _, tid = cursor.partition("|")
        before = (check.as_finite(t, "before (the cursor's time)"), tid)
    return {"success": {"success": True, "failure": False}.get(status), "since": check.time_value(qp, "since"),
            "until": check.time_value(qp, "until"), "text": check.text(qp, "text"), "task_id": check.text(qp, "task_id"),
            "host": check.text(qp, "host"), "before": before,
            "limit": check.whole(qp, "limit", 50, minimum=1, maximum=500, clamp=True)}


def _results(admin: QueueAdmin, queue: str, args: dict) -> dict:
    recs = admin.search(queue, **args) if queue else []
    nxt = f"{recs[-1]['time_start']!r}|{recs[-1]['task_id']}" if len(recs) >= args["limit"] else None
    return {"records": recs, "next": nxt}


@requires("viewer")
async def results_page(request: Request) -> Response:
    qp = request.query_params
    admin = _admin(request)
    args = _search_args(qp)
    queue = qp.get("queue", "")
    data, names = await run_in_threadpool(lambda: (_results(admin, queue, args), admin.queue_names()))
    totals = await run_in_threadpool(admin.totals, queue or None) if queue else None
    keep = {k: v for k, v in qp.items() if k not in ("before", "_partial")}
    return _render(request, "results.html", {"queues": names, "queue": queue, "q": keep, "totals": totals, **data})


@requires("viewer")
async def api_results(request: Request) -> Response:
    args = _search_args(request.query_params)
    queue = request.query_params.get("queue", "")
    if not queue:
        return JSONResponse({"error": "queue is required"}, status_code=400)
    return JSONResponse(await run_in_threadpool(_results, _admin(request), queue, args))


@requires("viewer")
async def task_page(request: Request) -> Response:
    q, tid = request.path_params["queue"], request.path_params["task_id"]
    admin = _admin(request)
    runs = await run_in_threadpool(admin.task_timeline, q, tid)
    rpc = await run_in_threadpool(admin.result, tid)
    if _is_api(request):
        return JSONResponse({"queue": q, "task_id": tid, "runs": runs, "rpc_result": rpc})
    return _render(request, "task.html", {"queue": q, "task_id": tid, "runs": runs, "rpc": rpc})


# ============================================================================ dead letters
def _dl_filter(src: Any) -> DeadLetterFilter:
    """The filter of a dead-letter request; every field is text (``task_ids``: a list of texts or one text,
    comma-separated): anything else is a 400 before the scan starts."""
    ids = check.text_list(src, "task_ids")
    return DeadLetterFilter(task_ids=set(ids) if ids else None, text=check.text(src, "text"),
                            reason=check.text(src, "reason"))


@requires("viewer")
async def deadletters_page(request: Request) -> Response:
    qp = request.query_params
    admin = _admin(request)
    queue = qp.get("queue", "")
    names = await run_in_threadpool(admin.queue_names)
    listed = total = None
    err = None
    if queue:
        flt = _dl_filter(qp)
        try:
            listed = await run_in_threadpool(lambda: admin.dead_letters(queue, "list", flt, limit=100))
            total = await run_in_threadpool(lambda: admin.dead_letters(queue, "count", flt))
        except BrokerUnknown as exc:
            err = str(exc)
    failed = await run_in_threadpool(lambda: admin.search(queue, success=False, limit=20)) if queue else []
    return _render(request, "deadletters.html", {"queues": names, "queue": queue, "q": dict(qp), "listed": listed,
                                                 "total": total, "error": err, "failed": failed})


def _parse_edit(form: dict) -> Optional[Callable[[dict], dict]]:
    """The edited arguments: a JSON object, or its text (the page's text area)."""
    new = check.json_object(form, "edit")
    return None if new is None else (lambda old: new)


def _confirmed(form: dict) -> Optional[int]:
    """The count the user confirmed (the preview's), or None for a preview. A whole number only: ``true``
    or "yes" would confirm whatever matches by the time the action runs."""
    raw = form.get("confirm")
    if raw is None or raw == "":
        return None
    try:
        n = check.as_whole(raw, "confirm")
    except RequestError:
        raise RequestError(f"confirm must be the number of dead letters the preview counted, got {raw!r}") from None
    if n < 0:
        raise RequestError(f"confirm must be >= 0, got {n}")
    return n


@requires("operator")
async def deadletters_action(request: Request) -> Response:
    """POST action=retry|delete with a filter (reason / text / task_ids) and optionally edited arguments.
    Without ``confirm`` the answer is a preview (how many match). With ``confirm`` equal to that count the
    action runs on at most that many messages and is written to the audit log; when the count has changed
    since the preview (more or fewer match now) nothing runs: 409 with the new count, to confirm again."""
    queue = request.path_params["queue"]
    form = request.state.form
    action = form.get("action")
    admin = _admin(request)
    if action not in ("retry", "delete"):
        raise RequestError("action must be retry or delete")
    flt = _dl_filter(form)
    edit = _parse_edit(form)
    if edit is not None and not flt.task_ids:
        raise RequestError("edit-and-rerun applies to messages chosen by task id")
    confirm = _confirmed(form)
    try:
        preview = await run_in_threadpool(lambda: admin.dead_letters(queue, "count", flt))
    except BrokerUnknown as exc:
        raise RequestError(str(exc), 404) from None
    keep = {k: val for k, val in form.items() if k not in ("csrf", "confirm")}
    if confirm is None or confirm != preview.matched:
        changed = confirm is not None
        status = 409 if changed else 200
        note = (f"the dead letters matching changed since the preview: {preview.matched} match now, "
                f"{confirm} were confirmed; nothing was done") if changed else None
        if _is_api(request):
            body: dict = {"preview": True, "action": action, "matched": preview.matched,
                          "hint": f"send again with confirm: {preview.matched} to run it"}
            return JSONResponse({**body, "error": note} if changed else body, status_code=status)
        return _render(request, "dl_confirm.html", {"queue": queue, "action": action, "count": preview.matched,
                                                    "form": keep, "changed": note}, status=status)
    who = request.state.who.name
    # at most the confirmed number: one that arrives between the count above and the scan is left alone
    res = await run_in_threadpool(lambda: admin.dead_letters(queue, action, flt, edit=edit, who=who, limit=confirm))
    if _is_api(request):
        return JSONResponse({"action": action, "matched": res.matched, "scanned": res.scanned})
    _flash(request, f"{action}: {res.matched} dead letters of {queue}")
    return RedirectResponse(f"/deadletters?queue={quote(queue, safe='')}", status_code=303)


@requires("viewer")
async def api_deadletters(request: Request) -> Response:
    queue = request.path_params["queue"]
    qp = request.query_params
    limit = check.whole(qp, "limit", 100, minimum=1, maximum=1000, clamp=True)
    flt = _dl_filter(qp)
    try:
        res = await run_in_threadpool(lambda: _admin(request).dead_letters(queue, "list", flt, limit=limit))
    except BrokerUnknown as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse(res.as_dict())


# ============================================================================ consumers
@requires("viewer")
async def consumers_page(request: Request) -> Response:
    search = request.query_params.get("search", "").strip()
    cs = await run_in_threadpool(_admin(request).consumers)
    if search:
        cs = [c for c in cs if search in str(c.get("host", "")) or search in str(c.get("ip", ""))
              or search in str(c.get("queue", ""))]
    if _is_api(request):
        return JSONResponse({"consumers": cs})
    return _render(request, "consumers.html", {"consumers": cs, "search": search, "now": time.time()})


# ============================================================================ RPC
@requires("viewer")
async def rpc_page(request: Request) -> Response:
    admin = _admin(request)
    catalog = await run_in_threadpool(admin.catalog)
    tid = request.query_params.get("task_id")
    looked = await run_in_threadpool(admin.result, tid) if tid else None
    return _render(request, "rpc.html", {"catalog": catalog, "queue": request.query_params.get("queue", ""),
                                         "task_id": tid, "looked": looked, "published": None})


def _publish(admin: QueueAdmin, who: Principal, queue: str, kwargs: dict, wait: float) -> dict:
    tid = admin.publish(queue, kwargs, options={"is_using_rpc_mode": True})
    audit_log(admin.state, who.name, "rpc.publish", queue, 1, {"task_id": tid})
    res = admin.result(tid, timeout=wait) if wait > 0 else None
    return {"task_id": tid, "result": res}


@requires("operator")
async def rpc_publish(request: Request) -> Response:
    form = request.state.form
    queue = request.path_params.get("queue", "")
    admin = _admin(request)
    try:
        queue = check.text(form, "queue") or queue or check.required_text(form, "queue")
        kwargs = check.json_object(form, "kwargs" if "kwargs" in form else "args") or {}
        # null or absent: the configured wait; a finite number >= 0 (0: do not wait), at most MAX_RPC_WAIT
        asked = check.finite(form, "wait", minimum=0)
        wait = min(_cfg(request).rpc_wait if asked is None else asked, MAX_RPC_WAIT)
        out = await run_in_threadpool(_publish, admin, request.state.who, queue, kwargs, wait)
    except (ValueError, BrokerUnknown, RequestError) as exc:
        if _is_api(request):
            return JSONResponse({"error": str(exc)}, status_code=400)
        _flash(request, f"publish failed: {exc}", "error")
        return RedirectResponse(f"/rpc?queue={quote(queue, safe='')}", status_code=303)
    if _is_api(request):
        return JSONResponse(out)
    catalog = await run_in_threadpool(admin.catalog)
    return _render(request, "rpc.html", {"catalog": catalog, "queue": queue, "task_id": out["task_id"],
                                         "looked": out["result"], "published": out, "sent": kwargs})


@requires("viewer")
async def api_result(request: Request) -> Response:
    res = await run_in_threadpool(_admin(request).result, request.path_params["task_id"])
    if res is None:
        return JSONResponse({"error": "no result (unknown task id, not an RPC task, expired or not finished)"},
                            status_code=404)
    return JSONResponse(res)


# ============================================================================ scheduled jobs
@requires("viewer")
async def jobs_page(request: Request) -> Response:
    admin = _admin(request)
    listing = await run_in_threadpool(jobs_mod.list_jobs, admin)
    unavailable = jobs_mod.unavailable_kinds()  # not read at all (one note each, not one error per queue)
    if _is_api(request):
        return JSONResponse({"stores": listing, "unavailable": unavailable})
    return _render(request, "jobs.html", {"stores": listing, "unavailable": unavailable})


@requires("operator")
async def job_action(request: Request) -> Response:
    p = request.path_params
    admin = _admin(request)
    try:
        await run_in_threadpool(jobs_mod.job_action, admin, p["kind"], p["queue"], p["job_id"], p["action"])
    except ValueError as exc:
        return _error(request, 400, str(exc))
    except LookupError as exc:
        return _error(request, 404, str(exc))
    except jobs_mod.StoreUnavailable as exc:  # its client library is missing, or its server cannot be reached
        return _error(request, 503, str(exc))
    audit_log(admin.state, request.state.who.name, f"job.{p['action']}", p["queue"], 1,
              {"store": p["kind"], "job_id": p["job_id"]})
    if _is_api(request):
        return JSONResponse({"ok": True})
    _flash(request, f"job {p['job_id']}: {p['action']} done")
    return RedirectResponse("/jobs", status_code=303)


# ============================================================================ audit, users, tokens
@requires("viewer")
async def audit_page(request: Request) -> Response:
    entries = await run_in_threadpool(read_audit, _admin(request).state, 500)
    if _is_api(request):
        return JSONResponse({"entries": entries})
    return _render(request, "audit.html", {"entries": entries})


@requires("admin")
async def users_page(request: Request) -> Response:
    users = _users(request)
    data = await run_in_threadpool(lambda: (users.users(), users.tokens()))
    return _render(request, "users.html", {"users": data[0], "tokens": data[1], "roles": ROLES,
                                           "new_token": request.session.pop("new_token", None)})


@requires("admin")
async def users_action(request: Request) -> Response:
    form = request.state.form
    users = _users(request)
    who = request.state.who.name
    admin = _admin(request)
    action = check.text(form, "action", "")
    try:
        if action == "set_user":
            name, role = check.required_text(form, "username"), check.text(form, "role") or "viewer"
            await run_in_threadpool(users.set_user, name, check.required_text(form, "password"), role)
            audit_log(admin.state, who, "user.set", str(name), None, {"role": role})
        elif action == "delete_user":
            name = check.required_text(form, "username")
            if name == who:
                raise ValueError("you cannot delete yourself")
            await run_in_threadpool(users.delete_user, name)
            audit_log(admin.state, who, "user.delete", str(name))
        elif action == "create_token":
            name, role = check.text(form, "name") or "token", check.text(form, "role") or "viewer"
            token = await run_in_threadpool(users.create_token, name, role, who)
            audit_log(admin.state, who, "token.create", str(name), None, {"role": role})
            if _is_api(request):
                return JSONResponse({"token": token})
            request.session["new_token"] = token  # shown once on the next page
        elif action == "revoke_token":
            token_id = check.required_text(form, "id")
            ok = await run_in_threadpool(users.revoke_token, token_id)
            audit_log(admin.state, who, "token.revoke", str(token_id), 1 if ok else 0)
        else:
            raise ValueError(f"unknown action {action!r}")
    except ValueError as exc:
        return _error(request, 400, str(exc))
    if _is_api(request):
        return JSONResponse({"ok": True})
    return RedirectResponse("/admin/users", status_code=303)


# ============================================================================ prometheus
@requires("viewer")
async def metrics(request: Request) -> Response:
    from funboost_web.prom import render_metrics
    body, ctype = await run_in_threadpool(render_metrics, _admin(request))
    return Response(body, media_type=ctype)


async def index(request: Request) -> Response:
    return RedirectResponse("/queues", status_code=303)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


# ============================================================================ the app
_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # scripts only from /static (no inline script: a stored value shown in a page cannot run)
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'; form-action 'self'",
}


class SecurityHeaders:
    """ASGI middleware: the headers above on every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in _HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(cfg: WebConfig) -> Starlette:
    users = UserStore(cfg.admin.state)
    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/queues", queues_page),
        Route("/queues/{queue:segment}", queue_page),
        Route("/queues/{queue:segment}/action", queue_action, methods=["POST"]),
        Route("/charts", charts_page),
        Route("/results", results_page),
        Route("/results/{queue:segment}/{task_id:segment}", task_page),
        Route("/deadletters", deadletters_page),
        Route("/deadletters/{queue:segment}", deadletters_action, methods=["POST"]),
        Route("/consumers", consumers_page),
        Route("/rpc", rpc_page),
        Route("/rpc", rpc_publish, methods=["POST"]),
        Route("/jobs", jobs_page),
        Route("/jobs/{kind}/{queue:segment}/{job_id:segment}/{action}", job_action, methods=["POST"]),
        Route("/audit", audit_page),
        Route("/admin/users", users_page),
        Route("/admin/users", users_action, methods=["POST"]),
        Route("/metrics", metrics),
        # JSON API (same auth; bearer tokens for scripts)
        Route("/api/queues", api_queues),
        Route("/api/queues/{queue:segment}", api_queue),
        Route("/api/queues/{queue:segment}/{action}", queue_action, methods=["POST"]),
        Route("/api/series", api_series),
        Route("/api/results", api_results),
        Route("/api/results/{queue:segment}/{task_id:segment}", task_page),
        Route("/api/result/{task_id:segment}", api_result),
        Route("/api/deadletters/{queue:segment}", api_deadletters),
        Route("/api/deadletters/{queue:segment}", deadletters_action, methods=["POST"]),
        Route("/api/consumers", consumers_page),
        Route("/api/publish", rpc_publish, methods=["POST"]),
        Route("/api/publish/{queue:segment}", rpc_publish, methods=["POST"]),
        Route("/api/jobs", jobs_page),
        Route("/api/jobs/{kind}/{queue:segment}/{job_id:segment}/{action}", job_action, methods=["POST"]),
        Route("/api/audit", audit_page),
        Route("/api/admin/users", users_action, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    secret = users.session_secret()
    app = Starlette(routes=routes, middleware=[
        Middleware(KeepEncodedSlashes),  # before routing: an encoded "/" stays in its segment (queue names)
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=secret, session_cookie="funboost_web", max_age=SESSION_MAX_AGE,
                   same_site="strict", https_only=cfg.https),
    ])
    app.state.cfg = cfg
    app.state.users = users

    return app
