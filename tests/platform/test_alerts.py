"""The alert rules and the Grafana dashboard of docker/, checked with promtool and against the app.

``promtool`` (Debian's ``prometheus`` package; ``.ci/run`` installs it, or set
``WALLET_TEST_PROMTOOL`` to a binary) checks the rules and the Prometheus configuration, runs the
unit tests of docker/alerts_test.yml, and parses every query of the dashboard. Without it these
tests fail and say what to install: a check that cannot run is not a check that passed.

The rest is read from the files: every alert tested both firing and not, labelled and pointing
at its runbook; the dashboard's panels wired to the provisioned data source; and every metric
that a rule or a panel names exposed by the app on ``GET /metrics``, with the labels it uses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from app.metrics import LATENCY_BUCKETS
from app.seamless.outcome import CODES, Reason
from tests.fixtures.app import Table
from tests.platform.test_docker import COMPOSE, container_port, filled_env, interpolate, load_yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
ALERTS = DOCKER / "alerts.yml"
ALERTS_TEST = DOCKER / "alerts_test.yml"
GRAFANA = DOCKER / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "wallet.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "wallet.yml"
DEPLOYMENT = ROOT / "docs" / "deployment.md"

PROMTOOL = os.environ.get("WALLET_TEST_PROMTOOL") or shutil.which("promtool")
SEVERITIES = {"critical", "warning"}
# Series Prometheus makes itself, not the app.
PROMETHEUS_SERIES = {"up"}


def run_promtool(*args: str, cwd: Path = DOCKER) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail (never skip) when it is missing."""
    if PROMTOOL is None:
        pytest.fail(
            "no promtool to check the rules with: install Debian's prometheus package (apt-get "
            "install prometheus, as .ci/run does) or set WALLET_TEST_PROMTOOL to a promtool binary"
        )
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def promtool(*args: str) -> str:
    """promtool's output, once it has said yes."""
    done = run_promtool(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# ---------------------------------------------------------------------------------------------
# Reading the files


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels, those inside collapsed rows too, without the rows themselves."""
    found = []
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def rule_queries() -> list[str]:
    return [str(rule["expr"]) for rule in rules()]


# Grafana's interval variables, and what stands in for them when Prometheus parses a query.
_GRAFANA_VARIABLE = re.compile(r"\$__(rate_interval|interval|range)\b")


# A PromQL string literal, whose content is no name or label.
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')


def as_promql(query: str) -> str:
    return _GRAFANA_VARIABLE.sub("5m", query)


_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(query: str) -> set[str]:
    """The metric (and recorded) names a PromQL query selects: identifiers that are not a
    function call, a keyword, a label (inside braces or a grouping) or part of a duration."""
    text = _STRING.sub('""', as_promql(query))
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        if not m[2] and m[1].lower() not in _KEYWORDS:
            names.add(m[1])
    return names


def exposed_series(text: str) -> set[str]:
    """Every series name the exposition declares, whether or not it has a sample yet: a labelled
    counter nobody incremented is declared by its HELP and TYPE lines only."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "untyped": ("",),
    }
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in suffixes[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"job", "instance"}


def sample_labels(text: str) -> dict[str, set[str]]:
    """The label names of each exposed series that has samples."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def recorded_labels() -> dict[str, set[str]]:
    """The labels each recording rule's series keep: those of its first ``by (...)`` (the
    outermost aggregation in ours), without ``le``, which histogram_quantile consumes."""
    labels = {}
    for rule in rules():
        if "record" in rule:
            m = re.search(r"\bby\s*\(([^)]*)\)", str(rule["expr"]))
            names = {n.strip() for n in m[1].split(",")} if m else set()
            labels[rule["record"]] = names - {"le", ""}
    return labels


def selectors(query: str) -> list[tuple[str, set[str]]]:
    """Each ``name{...}`` of a query, with the label names its matchers test."""
    text = _STRING.sub('""', as_promql(query))
    return [
        (m[1], set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m[2])))
        for m in re.finditer(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", text)
    ]


def grouping_labels(query: str) -> set[str]:
    """The labels a query groups or matches on (by, without, on, ignoring, group_left/right)."""
    text = _STRING.sub('""', as_promql(query))
    found = re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text)
    return {name.strip() for names in found for name in names.split(",")} - {""}


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m[1].strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def runbook_section() -> str:
    text = DEPLOYMENT.read_text()
    start = text.index("\n## Runbook\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


# ---------------------------------------------------------------------------------------------
# promtool


def test_promtool_accepts_the_rules_and_the_prometheus_config() -> None:
    assert f"SUCCESS: {len(rules())} rules found" in promtool("check", "rules", ALERTS.name)
    # The config names the rule file relative to itself, as compose mounts them side by side.
    checked = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in checked
    assert load_yaml(DOCKER / "prometheus.yml")["rule_files"] == [ALERTS.name]


def test_the_rules_pass_their_unit_tests() -> None:
    assert load_yaml(ALERTS_TEST)["rule_files"] == [ALERTS.name]
    assert "SUCCESS" in promtool("test", "rules", ALERTS_TEST.name)


def test_a_wrong_expectation_fails_the_unit_tests(tmp_path: Path) -> None:
    # The unit tests compare annotations too: a changed summary makes promtool say no.
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    text = ALERTS_TEST.read_text()
    changed = text.replace("Stale rounds of provider acme: 3", "Stale rounds of provider acme: 4")
    assert changed != text
    (tmp_path / ALERTS_TEST.name).write_text(changed)
    done = run_promtool("test", "rules", ALERTS_TEST.name, cwd=tmp_path)
    assert done.returncode != 0 and "WalletStaleRounds" in done.stdout + done.stderr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    # promtool parses a rule file's expressions: each query becomes a recording rule.
    queries = dashboard_queries()
    doc = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": as_promql(q)} for i, q in
                          enumerate(queries)],
            }
        ]
    }  # fmt: skip
    path = tmp_path / "dashboard_rules.yml"
    with path.open("w") as out:
        YAML(typ="safe", pure=True).dump(doc, out)
    assert f"SUCCESS: {len(queries)} rules found" in promtool("check", "rules", str(path))


# ---------------------------------------------------------------------------------------------
# The alerts


def test_every_alert_is_tested_firing_and_not() -> None:
    tests = load_yaml(ALERTS_TEST)["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    for name in names:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no test where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no test where it does not"
    assert {case["alertname"] for case in cases} <= set(names)


def test_every_alert_has_a_severity_a_duration_and_its_runbook() -> None:
    anchors = heading_anchors(runbook_section())
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        notes = rule["annotations"]
        assert notes["summary"].strip() and notes["description"].strip(), name
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/deployment.md" and anchor in anchors, name
    # Every runbook entry is some alert's.
    used = {rule["annotations"]["runbook_url"].partition("#")[2] for rule in alerts()}
    assert {a for a in anchors if a.startswith("wallet")} == used


def test_the_alert_table_of_the_docs_is_the_rules() -> None:
    text = DEPLOYMENT.read_text()
    table = text[text.index("| alert | severity | fires when |") :].split("\n\n")[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (.*) \|$", table, re.MULTILINE)
    assert [(name, severity) for name, severity, _ in rows] == [
        (rule["alert"], rule["labels"]["severity"]) for rule in alerts()
    ]
    units = {"s": "s", "m": "min", "h": "h"}
    for (name, _, when), rule in zip(rows, alerts(), strict=True):
        waited = re.fullmatch(r"(\d+)([smh])", rule["for"])
        assert waited and f"{waited[1]} {units[waited[2]]}" in when, name


def test_the_codes_and_reasons_named_are_the_contracts() -> None:
    reasons = {reason.value for reason in Reason}
    for query in rule_queries() + dashboard_queries():
        for label, values in re.findall(r'\b(code|reason)\s*[!=]~?\s*"([^"]*)"', query):
            known = set(CODES) if label == "code" else reasons
            assert set(values.split("|")) <= known, query
    # R4 is the player's balance, not a fault: no alert counts it.
    assert not [q for q in rule_queries() if "R4" in q or "insufficient_funds" in q]


def test_the_latency_budget_is_a_bucket_edge() -> None:
    (rule,) = [r for r in alerts() if r["alert"] == "WalletSeamlessP99OverBudget"]
    (budget,) = re.findall(r"p99_5m > ([0-9.]+)", rule["expr"])
    # histogram_quantile interpolates inside a bucket: only at an edge is the threshold exact.
    assert float(budget) in LATENCY_BUCKETS
    assert f"{round(float(budget) * 1000)} ms budget" in rule["annotations"]["description"]
    # The dashboard's p99 panel draws the same budget.
    (panel,) = [p for p in panels() if "p99_5m" in p["targets"][0]["expr"]]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == float(budget)


def test_the_names_the_rules_use_are_recorded_or_raw() -> None:
    # A name with a colon is a recording rule's, and must be one of ours.
    for query in rule_queries() + dashboard_queries():
        for name in metric_names(query):
            assert ":" not in name or name in recorded(), (name, query)


def test_metric_names_are_read_from_queries() -> None:
    query = (
        'sum by (code, reason) (rate(wallet_a_total{code!="R0", reason=~"x|y"}[$__rate_interval]))'
        " / on (code) group_left (event) wallet:b:rate5m > bool 0.5"
        " and time() - max(wallet_c_seconds offset 5m) > 3 * 3600 or absent(up{job='w'} == 1e3)"
    )
    assert metric_names(query) == {"wallet_a_total", "wallet:b:rate5m", "wallet_c_seconds", "up"}
    assert selectors(query) == [("wallet_a_total", {"code", "reason"}), ("up", {"job"})]
    assert grouping_labels(query) == {"code", "reason", "event"}


# ---------------------------------------------------------------------------------------------
# The dashboard and its provisioning


def test_the_dashboard_panels_are_wired_to_the_provisioned_prometheus() -> None:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus"
    doc = dashboard()
    ids = [panel["id"] for panel in doc["panels"]] + [
        panel["id"] for row in doc["panels"] if row["type"] == "row" for panel in row["panels"]
    ]
    assert len(ids) == len(set(ids))
    assert panels()
    for panel in panels():
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, title
        targets = panel["targets"]
        assert targets and all(t["expr"].strip() for t in targets), title
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), title
        assert all(t.get("datasource", panel["datasource"]) == panel["datasource"] for t in targets)
    rows = {panel["title"] for panel in doc["panels"] if panel["type"] == "row"}
    assert {"Money flow", "Latency", "R-codes", "Payments", "Saturation"} <= rows
    assert any("Outbox" in row for row in rows)


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    doc: dict[str, Any] = interpolate(load_yaml(COMPOSE), filled_env())
    return doc


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts, host path (relative to docker/) -> container path."""
    found = {}
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            assert (DOCKER / source).exists(), source
            found[source] = target
    return found


def test_compose_mounts_the_rules_next_to_the_prometheus_config(stack: dict[str, Any]) -> None:
    prometheus = stack["services"]["prometheus"]
    (config_flag,) = [a for a in prometheus["command"] if a.startswith("--config.file=")]
    config_dir = Path(config_flag.partition("=")[2]).parent
    mounted = mounts(prometheus)
    for rule_file in load_yaml(DOCKER / "prometheus.yml")["rule_files"]:
        assert mounted[f"./{rule_file}"] == str(config_dir / rule_file)
    # The unit tests are for promtool here, not for the running Prometheus.
    assert f"./{ALERTS_TEST.name}" not in mounted


def test_compose_provisions_grafana_with_prometheus_and_the_dashboard(
    stack: dict[str, Any],
) -> None:
    services = stack["services"]
    grafana = services["grafana"]
    mounted = mounts(grafana)
    assert mounted["./grafana/provisioning"] == "/etc/grafana/provisioning"
    # Provisioning finds the dashboards where compose mounts them.
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    assert provider["type"] == "file"
    assert mounted["./grafana/dashboards"] == provider["options"]["path"]
    # The data source is the prometheus service, on the port it listens on.
    (source,) = load_yaml(DATASOURCES)["datasources"]
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus" and "prometheus" in grafana["depends_on"]
    assert url.port == container_port(services["prometheus"]["ports"][0])
    # Not published beyond the host, and with a password of the operator's choosing.
    assert grafana["ports"][0].startswith("127.0.0.1:")
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert "GRAFANA_ADMIN_PASSWORD=" in (DOCKER / ".env.example").read_text()


# ---------------------------------------------------------------------------------------------
# Against the app


async def exposition(http: httpx.AsyncClient, table: Table) -> str:
    """``GET /metrics`` after a little traffic, so labelled series have samples as well as
    declarations: a bet, a win, and a bet refused for the balance."""
    assert (await table.bet(100))["code"] == "R0"
    assert (await table.result(150))["code"] == "R0"
    assert (await table.bet(10**9, round_id="r2"))["code"] == "R4"
    response = await http.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_every_metric_the_rules_and_dashboard_name_is_exposed(
    http: httpx.AsyncClient, table: Table
) -> None:
    exposed = exposed_series(await exposition(http, table))
    assert "wallet_seamless_requests_total" in exposed  # the parse found the families

    named = {
        name
        for query in rule_queries() + dashboard_queries()
        for name in metric_names(query)
        if ":" not in name
    }
    missing = sorted(named - exposed - PROMETHEUS_SERIES)
    assert not missing, f"named by docker/alerts.yml or the dashboard, not exposed: {missing}"


async def test_every_label_the_rules_and_dashboard_use_is_on_their_series(
    http: httpx.AsyncClient, table: Table
) -> None:
    # Label names are checked on the series that have samples now (a labelled series nobody
    # has touched declares no labels) and on the recorded ones.
    known = {name: labels | TARGET_LABELS for name, labels in sample_labels(
        await exposition(http, table)).items()}  # fmt: skip
    known |= {name: labels | TARGET_LABELS for name, labels in recorded_labels().items()}
    known |= {name: set(TARGET_LABELS) for name in PROMETHEUS_SERIES}
    assert known["wallet_seamless_requests_total"] >= {"event", "code", "reason"}
    checked = 0
    for query in rule_queries() + dashboard_queries():
        for name, labels in selectors(query):
            if name in known:
                assert labels <= known[name], (name, query)
                checked += 1
        names = metric_names(query)
        if names <= set(known):
            available = set.union(*(known[name] for name in names))
            assert grouping_labels(query) <= available, query
            checked += 1
    assert checked > 20
