"""Render results: one table, then agentwharf's own numbers and its targets."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

#: Issue 17's goal 1, at 32 connections on 2 cores.
TARGET_VS_AGENTSERVER = 25.0
TARGET_VS_BARE = 0.10
TARGET_P99_MS = 20.0
#: Goal 4: a served version's worker against the model loaded bare.
TARGET_WORKER_RSS_VS_BARE = 1.5


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"  # 0.0035x, not 0.00x


def _traces(row: dict) -> str:
    if row.get("traces") is None:
        return "n/a"
    answered = row["wrk"]["answered"]
    share = f" ({100 * row['traces'] / answered:.1f}%)" if answered else ""
    return f"{row['traces']:,} / {answered:,}{share}"


def table(rows: list[dict]) -> Table:
    ok = {r["system"]: r["wrk"] for r in rows if r.get("wrk")}
    agentserver_rps = ok.get("agentserver", {}).get("rps")
    bare_rps = ok.get("bare-echo", {}).get("rps")
    out = Table(title="Serving benchmark: EchoAgent, wrk -t2 POST JSON")
    for column in ("system", "rps", "p50 ms", "p99 ms", "errors", "requests answered",
                   "traces stored / answered", "rps ÷ agentserver", "rps ÷ bare-echo", "CPU µs / request"):
        out.add_column(column, justify="left" if column == "system" else "right")
    for row in rows:
        w = row.get("wrk")
        if w is None:
            out.add_row(row["system"], "[bold red]FAILED[/]", *[""] * 8)
            continue
        errors = f"[bold red]{w['errors']:,}[/]" if w["errors"] else "0"
        out.add_row(
            row["system"], f"{w['rps']:,.0f}", f"{w['p50_ms']:.1f}", f"{w['p99_ms']:.1f}", errors,
            f"{w['answered']:,}", _traces(row),
            _fmt_ratio(_ratio(w["rps"], agentserver_rps)), _fmt_ratio(_ratio(w["rps"], bare_rps)),
            f"{sum(row['cpu_us_per_request'].values()):,.0f}" if row.get("cpu_us_per_request") else "n/a",
        )
    return out


def _mib(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f} MiB"


def agentwharf_details(rows: list[dict], console: Console) -> None:
    row = next((r for r in rows if r["system"] == "agentwharf" and r.get("wrk")), None)
    if row is None:
        return
    notes = row.get("notes", {})
    console.print(f"agentwharf deploy-to-first-answer: {notes.get('deploy_to_first_answer_s', float('nan')):.1f} s")
    for label, key in (("after the load", "after_load"), ("before the load", "before_load")):
        memory = notes.get(key)
        if not memory:
            continue
        workers = memory["worker_rss_mib"]
        listed = ", ".join(f"pid {pid}: {_mib(rss)}" for pid, rss in workers.items()) or "no worker process found"
        spares = ", ".join(f"pid {pid}: {_mib(rss)}" for pid, rss in memory.get("spare_rss_mib", {}).items())
        console.print(escape(f"agentwharf resident memory (VmRSS) {label}: {len(workers)} worker process(es) [{listed}]; "
                             f"platform process {_mib(memory['platform_rss_mib'])}"
                             + (f"; warm spare worker(s) [{spares}]" if spares else "")))

    bare, after = notes.get("bare_load_model"), notes.get("after_load") or {}
    worker_rss = (after.get("worker_rss_mib") or {}).get(str(bare["worker_pid"])) if bare else None
    if bare and worker_rss:
        console.print(f"agentwharf worker resident memory after the load {_mib(worker_rss)}; a bare process that only "
                      f"loads the same model (mlflow.pyfunc.load_model) and predicts once: {_mib(bare['rss_mib'])}")
    for each in rows:
        if each.get("cpu_us_per_request"):
            console.print(f"CPU per request, {each['system']}: {_cpu(each['cpu_us_per_request'])}", highlight=False)
    ok = {r["system"]: r["wrk"] for r in rows if r.get("wrk")}
    w, checks = row["wrk"], []
    if "agentserver" in ok:
        ratio = _ratio(w["rps"], ok["agentserver"]["rps"])
        checks.append((f"rps >= {TARGET_VS_AGENTSERVER:.0f}x agentserver", ratio >= TARGET_VS_AGENTSERVER, _fmt_ratio(ratio)))
    if "bare-echo" in ok:
        ratio = _ratio(w["rps"], ok["bare-echo"]["rps"])
        checks.append((f"rps >= {TARGET_VS_BARE:.0%} of bare-echo", ratio >= TARGET_VS_BARE, f"{ratio:.0%}"))
    checks.append((f"p99 <= {TARGET_P99_MS:.0f} ms", w["p99_ms"] <= TARGET_P99_MS, f"{w['p99_ms']:.1f} ms"))
    if row.get("traces") is not None and w["answered"]:
        share = row["traces"] / w["answered"]
        checks.append(("100% traces stored", share >= 1.0, f"{share:.1%}"))
    checks.append(("no errors", w["errors"] == 0, f"{w['errors']:,}"))
    if bare and worker_rss:
        ratio = worker_rss / bare["rss_mib"]
        checks.append((f"worker resident memory <= {TARGET_WORKER_RSS_VS_BARE}x a bare load_model process", ratio <= TARGET_WORKER_RSS_VS_BARE,
                       _fmt_ratio(ratio)))
    for what, passed, value in checks:
        mark = "[green]PASS[/]" if passed else "[bold red]FAIL[/]"
        console.print(f"agentwharf target {mark} {what}: {value}")


def auth_cost(rows: list[dict], micro: dict[str, float] | None, console: Console) -> None:
    """What authentication costs: the same platform with and without it, in this run, and
    the check itself timed in-process."""
    ok = {r["system"]: r["wrk"] for r in rows if r.get("wrk")}
    if "agentwharf" in ok and "agentwharf-no-auth" in ok:
        with_auth, without = ok["agentwharf"], ok["agentwharf-no-auth"]
        per_request_us = (1 / with_auth["rps"] - 1 / without["rps"]) * 1e6 if with_auth["rps"] and without["rps"] else float("nan")
        console.print(f"agentwharf auth cost over HTTP: {with_auth['rps']:,.0f} rps with auth vs {without['rps']:,.0f} without "
                      f"({_fmt_ratio(_ratio(with_auth['rps'], without['rps']))}); p50 {with_auth['p50_ms']:.1f} vs "
                      f"{without['p50_ms']:.1f} ms; {per_request_us:+.0f} µs of wall time per request at saturation")
    for label, micros in (micro or {}).items():
        console.print(f"agentwharf auth check in-process, {label}: {micros:.2f} µs per request")


def _two_against_one(rows: list[dict], one_name: str, two_name: str, label: str, console: Console) -> None:
    """Two of something against one, from the same run's rows (when both ran)."""
    ok = {r["system"]: r["wrk"] for r in rows if r.get("wrk")}
    if one_name in ok and two_name in ok:
        one, two = ok[one_name], ok[two_name]
        console.print(f"agentwharf {label}: {two['rps']:,.0f} vs {one['rps']:,.0f} rps "
                      f"({_fmt_ratio(_ratio(two['rps'], one['rps']))}); p99 {two['p99_ms']:.1f} vs {one['p99_ms']:.1f} ms "
                      f"({_fmt_ratio(_ratio(two['p99_ms'], one['p99_ms']))})")


def worker_replicas(rows: list[dict], console: Console) -> None:
    """One worker process against two behind the same gateway, in this run."""
    _two_against_one(rows, "agentwharf", "agentwharf-2-workers", "worker replicas, 2 vs 1 (one gateway)", console)


def gateway_processes(rows: list[dict], console: Console) -> None:
    """Two gateway processes against one, both behind nginx, in this run."""
    _two_against_one(rows, "agentwharf-1-gateway", "agentwharf-2-gateways",
                     "gateway processes, 2 vs 1 (behind nginx, one worker)", console)


def warnings(rows: list[dict], console: Console) -> None:
    for row in rows:
        if row.get("error"):
            console.print(f"[bold red]{escape(row['system'])} FAILED:[/] {escape(row['error'])}", highlight=False)
        elif row["wrk"]["errors"]:
            w = row["wrk"]
            console.print(f"[yellow]{row['system']}: {w['errors']:,} errors under load "
                          f"({w['non_2xx']:,} non-2xx, {w['socket_errors']:,} socket errors)[/]")


def llm_overhead(result: dict | None, error: str | None, console: Console) -> None:
    """The LLM row: the scripted provider called directly and through the platform, this run."""
    out = Table(title="LLM endpoint overhead: the scripted provider, direct vs through the platform (one call at a time)")
    for column in ("path", "p50 ms", "p99 ms", "stream: first event p50 ms", "stream: first event p99 ms"):
        out.add_column(column, justify="left" if column == "path" else "right")
    if result is None:
        out.add_row("llm-overhead", "[bold red]FAILED[/]", "", "", "")
        console.print(out)
        console.print(f"[bold red]llm-overhead FAILED:[/] {escape(error or '?')}", highlight=False)
        return
    for label, key in (("provider, direct", "direct"), ("through the platform", "platform")):
        out.add_row(label, f"{result[f'{key}_50']:.2f}", f"{result[f'{key}_99']:.2f}",
                    f"{result[f'{key}_ttft_50']:.2f}", f"{result[f'{key}_ttft_99']:.2f}")
    out.add_row("[bold]added by the platform[/]", f"[bold]{result['added_p50']:+.2f}[/]", f"{result['added_p99']:+.2f}",
                f"[bold]{result['added_ttft_p50']:+.2f}[/]",
                f"{result['platform_ttft_99'] - result['direct_ttft_99']:+.2f}")
    console.print(out)
    from llm_overhead import TARGET_MS

    for what, added in (("p50", result["added_p50"]), ("stream time to first event", result["added_ttft_p50"])):
        met = "[green]met[/]" if added <= TARGET_MS else "[bold red]missed[/]"
        console.print(f"target: at most {TARGET_MS:.0f} ms added at {what}: {added:+.2f} ms, {met} "
                      f"({result['calls']} calls, {result['streams']} streams)")
    if "platform_cpu_us_per_call" in result:
        console.print(f"the platform's process used {result['platform_cpu_us_per_call']:,.0f} µs of CPU per call and "
                      f"{result['platform_cpu_us_per_stream']:,.0f} µs per stream (the part of the added time that does "
                      "not depend on what else the machine runs)")
    if "fdatasync_50" in result:
        console.print(f"of which durability: one append + fdatasync on this disk takes {result['fdatasync_50']:.2f} ms (p50, "
                      "measured in this run); a plain call pays it before its answer (one request at a time shares no "
                      "group commit), a stream after its last event")


def time_to_assessment(result: dict | None, error: str | None, console: Console) -> None:
    """The online scoring row: answer -> assessments readable through MLflow, under load."""
    out = Table(title="Online scoring: answer -> all assessments readable through MLflow (seconds)")
    for column in ("load", "scored", "p50 s", "p95 s", "p99 s", "max s", "error assessments"):
        out.add_column(column, justify="left" if column == "load" else "right")
    if result is None:
        out.add_row("time-to-assessment", "[bold red]FAILED[/]", "", "", "", "", "")
        console.print(out)
        console.print(f"[bold red]time-to-assessment FAILED:[/] {escape(error or '?')}", highlight=False)
        return
    load = f"{result['rate']:.0f} traces/s x {result['duration_s']:.0f}s, {result['scorers']} scorers"
    out.add_row(load, f"{result['scored']}/{result['sent']}", f"{result['p50_s']:.2f}", f"{result['p95_s']:.2f}",
                f"{result['p99_s']:.2f}", f"{result['max_s']:.2f}", str(result["error_assessments"]))
    console.print(out)
    met = result["p95_s"] <= result["target_p95_s"] and not result["unscored"]
    console.print(f"target: p95 at most {result['target_p95_s']:.0f} s: {result['p95_s']:.2f} s, "
                  f"{'[green]met[/]' if met else '[bold red]missed[/]'} (polled every {result['poll_s']} s, a trace older "
                  "than 5 s every 5% of its age: an upper bound by at most one interval)")


def _verdict(passed: bool) -> str:
    return "[green]PASS[/]" if passed else "[bold red]FAIL[/]"


def _load(averages) -> str:
    return ", ".join(f"{a:.1f}" for a in averages)


def _cpu(per_role: dict[str, float]) -> str:
    """``1,234 µs (worker 800, gateway 300, ...)``: the total and each process's share."""
    if not per_role:
        return "n/a (nothing answered)"
    parts = ", ".join(f"{role} {us:,.0f}" for role, us in sorted(per_role.items(), key=lambda kv: -kv[1]) if us >= 1)
    return f"{sum(per_role.values()):,.0f} µs ({parts})"


def _cores(per_role: dict[str, float], ideal: float, what: str) -> str:
    """What the ideal rate would take at this CPU cost: why a target is out of reach here."""
    if not per_role:
        return ""
    return f"; {ideal:,.0f} {what}/s would need {ideal * sum(per_role.values()) / 1e6:.1f} cores"


def waiting(result: dict | None, error: str | None, console: Console) -> None:
    """The rows of agents that wait: throughput against the ideal under N requests in flight,
    and the time a stream's first event gains through the gateway."""
    out = Table(title="Agents that wait: a 250 ms predict (wait-250ms), 20 tokens 25 ms apart (stream-ttfe)")
    for column in ("row", "system", "in flight", "answers/s", "ideal", "ratio", "p50 ms", "p99 ms", "errors", "target",
                   "result"):
        out.add_column(column, justify="left" if column in ("row", "system", "target") else "right")
    if result is None:
        out.add_row("wait-250ms / stream-ttfe", "[bold red]FAILED[/]", *[""] * 9)
        console.print(out)
        console.print(f"[bold red]wait-250ms / stream-ttfe FAILED:[/] {escape(error or '?')}", highlight=False)
        return
    for line in result["wait"]:
        out.add_row("wait-250ms", line["system"], f"{line['connections']:,}", f"{line['answered_rps']:,.0f}",
                    f"{line['ideal_rps']:,.0f}", f"{line['ratio']:.0%}", f"{line['p50_ms']:.0f}", f"{line['p99_ms']:.0f}",
                    f"{line['errors']:,}", "answers >= 90% of ideal, p99 <= 325 ms (1.3x), no errors",
                    _verdict(line["passed"]))
    for line in result["stream"]:
        ideal = line["connections"] / (result["gap_s"] * line["tokens"])
        out.add_row("stream-ttfe", line["system"], f"{line['connections']:,}", f"{line['streams_per_s']:,.0f} streams/s",
                    f"{ideal:,.0f}", f"{line['streams_per_s'] / ideal:.0%}", f"+{line['added_p50_ms']:.1f}", f"+{line['added_p99_ms']:.1f}", f"{line['errors']:,}",
                    "first event: added <= 2 ms p50, <= 10 ms p99 (p50/p99 columns)", _verdict(line["passed"]))
    console.print(out)
    console.print(f"load average (1, 5, 15 min) before: {_load(result['load_average_before'])}, after: "
                  f"{_load(result['load_average_after'])}")
    for line in result["wait"]:
        console.print(f"wait-250ms, {line['system']} at {line['connections']:,}: CPU per request "
                      f"{_cpu(line['cpu_us_per_request'])}{_cores(line['cpu_us_per_request'], line['ideal_rps'], 'answers')}")
    for line in result["stream"]:
        ideal = line["connections"] / (result["gap_s"] * line["tokens"])
        console.print(f"stream-ttfe, {line['connections']:,} streams: CPU per stream {_cpu(line['cpu_us_per_stream'])}"
                      f"{_cores(line['cpu_us_per_stream'], ideal, 'streams')}")
    for line in result["stream"]:
        console.print(f"stream-ttfe, {line['connections']:,} streams: first event p50 {line['first_event_p50_ms']:.1f} ms, "
                      f"p99 {line['first_event_p99_ms']:.1f} ms, against the agent's own first token at "
                      f"{line['agent_first_token_ms']:.0f} ms ({line['streams']:,} streams timed)")
        for sample in line["error_samples"]:
            console.print(f"[yellow]stream-ttfe error: {escape(sample)}[/]")
