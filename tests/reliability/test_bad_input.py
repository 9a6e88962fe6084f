"""Bad input: generated Workspace documents through admission and through the reconciler's path.

* 10,000 documents (hypothesis; KAITO_RELIABILITY_BAD_INPUT_DOCS) — the seed examples with 0-4
  mutations drawn from a catalogue of field-level changes, plus wholly random trees — go through
  ``admission_review`` (CREATE, and UPDATE against a valid older Workspace) and through the
  reconciler's gate (``validate_workspace`` then ``parse_workspace``, as WorkspaceReconciler does).
  Nothing raises; admission allows exactly what the reconciler would act on; every denial names
  the field (``path: message``) of every problem.
* 200 of them (KAITO_RELIABILITY_BAD_INPUT_APPLY) are created on a real apiserver with the operator
  running without its webhook, so the reconciler is the only gate. Those the apiserver stores but the
  validator rejects end with WorkspaceReady=False/ValidationFailed naming the fields, and nothing is
  created for them: no Machine, Node, workload, Service, ConfigMap or ControllerRevision.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import (
    ROOT,
    Fleet,
    OperatorProcess,
    ReliabilityRow,
    condition,
    env_int,
    eventually,
    operator_kubeconfig,
    record,
)

from kaito_core.api import FieldError, parse_workspace, validate_workspace
from kaito_core.api.webhook import admission_review
from kaito_core.controllers.workspace import MACHINE, WORKSPACE
from kaito_core.engine import (
    CONFIGMAP,
    DEPLOYMENT,
    SERVICE,
    APIError,
    ConflictError,
    InvalidError,
    ResourceKind,
)
from kaito_core.testing import ControlPlane

pytestmark = pytest.mark.reliability

DOCS = env_int("BAD_INPUT_DOCS", 10_000)
APPLY = env_int("BAD_INPUT_APPLY", 200)
EXAMPLES = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("*.yaml"))]
STATEFULSET = ResourceKind("apps", "v1", "StatefulSet", "statefulsets")
JOB = ResourceKind("batch", "v1", "Job", "jobs")
REVISION = ResourceKind("apps", "v1", "ControllerRevision", "controllerrevisions")

# -- generating documents ----------------------------------------------------------------------------

junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10**12), st.floats(allow_nan=True),
              st.text(max_size=12), st.sampled_from(["", "nan", "-1", "0", "1.5", "Standard_NC6s_v3", "lora"])),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=8), children, max_size=3)),
    max_leaves=12,
)

# (path, strategy of values): each changes one field; many produce a valid Workspace, many do not.
MUTATIONS: list[tuple[tuple[str, ...], st.SearchStrategy[Any]]] = [
    (("resource", "count"), st.one_of(st.integers(-2, 12), st.sampled_from(["2", 1.5, None]))),
    (("resource", "instanceType"), st.sampled_from(["Standard_NC6s_v3", "Standard_NC12s_v3", "Standard_NC24ads_A100_v4",
                                                    "Standard_NC4as_T4_v3", "Standard_D4s_v3", "nope", "", 7])),
    (("resource", "labelSelector"), st.one_of(st.just({}), st.just({"matchLabels": {"a": "b"}}),
                                              st.dictionaries(st.sampled_from(["matchLabels", "matchExpressions",
                                                                               "x"]), junk, max_size=2))),
    (("resource", "preferredNodes"), st.lists(st.sampled_from(["node-a", "", "Bad Name", "n" * 300]), max_size=3)),
    (("resource",), st.one_of(junk, st.just(None))),
    (("inference", "preset", "name"), st.sampled_from(["phi-3-mini-4k-instruct", "phi-3-medium-4k-instruct",
                                                       "falcon-40b", "llama-3.1-8b-instruct", "gpt-5", "", None])),
    (("inference", "preset", "accessMode"), st.sampled_from(["public", "private", "secret", 3])),
    (("inference", "preset", "presetOptions"), st.one_of(st.just({"modelAccessSecret": "s"}), junk)),
    (("inference", "adapters"), st.lists(st.fixed_dictionaries(
        {"source": st.fixed_dictionaries({"name": st.sampled_from(["a1", "", "UPPER", "x" * 70]),
                                          "image": st.sampled_from(["reg.io/a:1", "", "not an image ref!"])}),
         "strength": st.sampled_from(["1.0", "0.5", "2", "-1", "nan", "high", ""])}), max_size=12)),
    (("inference", "template"), st.one_of(st.just({"spec": {"containers": [{"name": "c", "image": "i"}]}}), junk)),
    (("inference", "config"), st.sampled_from(["my-config", "", "Bad_Name"])),
    (("inference",), st.one_of(junk, st.just(None))),
    (("tuning",), st.one_of(st.just({"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora",
                                     "input": {"urls": ["https://example.com/d.parquet"]},
                                     "output": {"image": "reg.io/out:1", "imagePushSecret": "s"}}), junk)),
    (("tuning", "method"), st.sampled_from(["lora", "qlora", "full", ""])),
    (("tuning", "input", "urls"), st.lists(st.sampled_from(["https://example.com/a", "http://127.0.0.1/x",
                                                            "http://169.254.169.254/latest", "ftp://x/y",
                                                            "https://[::1]/", "http://metadata.google.internal/",
                                                            "not a url"]), max_size=3)),
    (("tuning", "output", "image"), st.sampled_from(["reg.io/out:1", "", "UPPER/Case:tag"])),
    (("metadata", "annotations"), st.dictionaries(st.sampled_from(["kaito.sh/runtime",
                                                                   "kaito.sh/bypass-resource-checks",
                                                                   "kaito.sh/enablelb", "other"]),
                                                  st.sampled_from(["vllm", "transformers", "tgi", "True", "yes",
                                                                   ""]), max_size=2)),
    (("apiVersion",), st.sampled_from(["kaito.sh/v1alpha1", "kaito.sh/v1beta1", "v1"])),
    (("kind",), st.sampled_from(["Workspace", "Machine"])),
    (("extraTopLevel",), junk),
]


def _set(doc: Any, path: tuple[str, ...], value: Any) -> Any:
    node = doc
    for key in path[:-1]:
        if not isinstance(node, dict):
            return doc
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if isinstance(node, dict):
        node[path[-1]] = value
    return doc


@st.composite
def workspace_documents(draw: st.DrawFn, min_mutations: int = 0) -> Any:
    if not min_mutations and draw(st.integers(0, 19)) == 0:
        return draw(junk)  # not even shaped like a Workspace
    doc = copy.deepcopy(draw(st.sampled_from(EXAMPLES)))
    for _ in range(draw(st.integers(min_mutations, 4))):
        path, values = draw(st.sampled_from(MUTATIONS))
        doc = _set(doc, path, draw(values))
    return doc


# -- checks --------------------------------------------------------------------------------------------

STATS: Counter[str] = Counter()
#: Whole-document errors carry no path; their message must then name the fields it is about.
TOP_LEVEL_FIELDS = ("inference", "tuning", "resource", "metadata", "apiVersion", "kind")


def _review(doc: Any, old: Any) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "kind": {"group": "kaito.sh", "version": "v1beta1", "kind": "Workspace"},
        "operation": "UPDATE" if old is not None else "CREATE", "namespace": "ns", "object": doc, "oldObject": old}}


def check_document(doc: Any, old: Any) -> None:
    # The reconciler's gate, exactly as WorkspaceReconciler.reconcile runs it.
    errors = validate_workspace(doc, old)
    ws, parse_errors = parse_workspace(doc)
    assert isinstance(errors, list) and all(isinstance(e, FieldError) for e in errors)
    reconciler_acts = not errors and ws is not None
    assert not (ws is None and not errors), f"the reconciler would act on nothing: {parse_errors}"
    # Admission.
    answer = admission_review(_review(doc, old))["response"]
    STATS["documents"] += 1
    if old is not None and answer["allowed"] and errors:
        # An UPDATE that leaves spec and annotations alone is allowed whatever they hold (webhook rule).
        STATS["update_unchanged_allowed"] += 1
        return
    assert answer["allowed"] is reconciler_acts, (answer, errors)
    if reconciler_acts:
        STATS["valid"] += 1
        return
    STATS["invalid"] += 1
    message = answer["status"]["message"]
    assert message, "a denial without a message"
    for error in errors:
        if not error.path:
            if not isinstance(doc, Mapping):
                STATS["not_an_object"] += 1
                continue
            # A cross-field rule (neither/both of inference and tuning, switching between them) has no
            # single path; it must still say which fields it means.
            STATS["pathless_cross_field"] += 1
            assert any(f in error.message for f in TOP_LEVEL_FIELDS), f"an error names no field: {error!r}"
            assert error.message in message, (error, message)
            continue
        assert f"{error.path}: " in message, (error, message)
        assert error.message.strip(), error


@settings(max_examples=DOCS, deadline=None, database=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(doc=workspace_documents(), old=st.one_of(st.none(), st.sampled_from(EXAMPLES)))
def _run_checks(doc: Any, old: Any) -> None:
    check_document(doc, old)


def test_ten_thousand_generated_documents_through_admission_and_the_reconciler_gate() -> None:
    row = record(ReliabilityRow("bad input: generated documents (admission + reconciler gate)"))
    STATS.clear()
    started = time.monotonic()
    _run_checks()
    row.max_convergence_s = time.monotonic() - started
    row.faults_injected = STATS["invalid"]
    row.objects_created = STATS["documents"]
    row.notes = (f"{STATS['documents']} documents: {STATS['valid']} valid, {STATS['invalid']} invalid "
                 f"(all denied with field paths; "
                 f"{STATS['not_an_object']} not even an object), "
                 f"{STATS['update_unchanged_allowed']} unchanged UPDATEs allowed; "
                 f"{STATS['pathless_cross_field']} cross-field errors without a path (message names the fields)")
    print(f"bad input: {dict(STATS)} in {row.max_convergence_s:.1f}s")
    assert STATS["documents"] >= DOCS * 0.9, STATS
    assert STATS["valid"] >= DOCS * 0.05 and STATS["invalid"] >= DOCS * 0.3, f"a lopsided sample: {STATS}"
    row.passed = True


# -- written-down cases: the expected outcome is in the test, not computed by the validator -------------

PHI3 = next(e for e in EXAMPLES if e["metadata"]["name"] == "workspace-phi-3-mini")
TUNING = next(e for e in EXAMPLES if "tuning" in e)


def _changed(base: dict[str, Any], *changes: tuple[tuple[str, ...], Any]) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for path, value in changes:
        _set(doc, path, value)
    return doc


def _pod(**spec: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "c", "image": "reg.io/app:1"}], **spec}}


_PRIVILEGED = {"spec": {"containers": [{"name": "c", "image": "reg.io/app:1",
                                        "securityContext": {"privileged": True}}]}}
_NO_INFERENCE = copy.deepcopy(PHI3)
del _NO_INFERENCE["inference"]

#: (case, document, None when it must be allowed, else a text the denial must contain: the field's path).
WRITTEN: list[tuple[str, dict[str, Any], str | None]] = [
    ("seed example phi-3", PHI3, None),
    ("seed example tuning", TUNING, None),
    ("two nodes", _changed(PHI3, (("resource", "count"), 2)), None),
    ("count 0", _changed(PHI3, (("resource", "count"), 0)), "resource.count"),
    ("count -1", _changed(PHI3, (("resource", "count"), -1)), "resource.count"),
    ("count 65 (above the maximum)", _changed(PHI3, (("resource", "count"), 65)), "resource.count"),
    ("count 2**70", _changed(PHI3, (("resource", "count"), 2**70)), "resource.count"),
    ("count as a string", _changed(PHI3, (("resource", "count"), "2")), "resource.count"),
    ("unknown preset", _changed(PHI3, (("inference", "preset", "name"), "gpt-5")), "inference.preset.name"),
    ("GPU too small for the model", _changed(PHI3, (("resource", "instanceType"), "Standard_NC4as_T4_v3"),
                                             (("inference", "preset", "name"), "phi-3-medium-4k-instruct")),
     "resource.instanceType"),
    ("not a GPU instance type", _changed(PHI3, (("resource", "instanceType"), "Standard_D4s_v3")),
     "resource.instanceType"),
    ("hostPath volume", _changed(PHI3, (("inference", "template"), _pod(volumes=[
        {"name": "root", "hostPath": {"path": "/"}}]))), "inference.template"),
    ("privileged container", _changed(PHI3, (("inference", "template"), _PRIVILEGED)), "inference.template"),
    ("hostNetwork", _changed(PHI3, (("inference", "template"), _pod(hostNetwork=True))), "inference.template"),
    ("hostPID", _changed(PHI3, (("inference", "template"), _pod(hostPID=True))), "inference.template"),
    ("foreign ServiceAccount", _changed(PHI3, (("inference", "template"), _pod(serviceAccountName="admin"))),
     "inference.template"),
    ("tuning download from the metadata address", _changed(TUNING, (("tuning", "input", "urls"),
                                                                  ["http://169.254.169.254/latest"])),
     "tuning.input.urls"),
    ("tuning download from loopback", _changed(TUNING, (("tuning", "input", "urls"), ["http://127.0.0.1/x"])),
     "tuning.input.urls"),
    ("tuning hostPath output", _changed(TUNING, (("tuning", "output"), {"volumeSource": {
        "hostPath": {"path": "/etc/kubernetes"}}})), "tuning.output"),
    ("both inference and tuning", _changed(PHI3, (("tuning",), copy.deepcopy(TUNING["tuning"]))), "tuning"),
    ("neither inference nor tuning", _NO_INFERENCE, "inference"),
    ("unknown tuning method", _changed(TUNING, (("tuning", "method"), "full")), "tuning.method"),
    ("eleven adapters", _changed(PHI3, (("inference", "adapters"), [
        {"source": {"name": f"a{i}", "image": f"reg.io/a{i}:1"}, "strength": "0.5"} for i in range(11)])),
     "inference.adapters"),
]


@pytest.mark.parametrize(("case", "doc", "denied_for"), WRITTEN, ids=[c for c, _, _ in WRITTEN])
def test_written_down_cases_get_their_written_down_outcome(case: str, doc: dict[str, Any],
                                                           denied_for: str | None) -> None:
    answer = admission_review(_review(doc, None))["response"]
    errors = validate_workspace(doc)
    ws, _ = parse_workspace(doc)
    if denied_for is None:
        assert answer["allowed"] is True, (case, answer)
        assert not errors and ws is not None, (case, errors)
        return
    assert answer["allowed"] is False, f"{case}: admitted, want a denial naming {denied_for}"
    assert denied_for in answer["status"]["message"], (case, answer["status"]["message"])
    assert errors, f"{case}: the reconciler's gate would act on it"


# -- on a real apiserver ---------------------------------------------------------------------------------


def _candidates(n: int, namespace: str) -> list[dict[str, Any]]:
    """``n`` generated documents shaped for the apiserver (metadata, apiVersion and kind fixed up)."""
    out: list[dict[str, Any]] = []

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(doc=workspace_documents(min_mutations=1))
    def collect(doc: Any) -> None:
        if isinstance(doc, dict):
            out.append(_for_apiserver(doc, "x", namespace))

    collect()
    return out


async def _sample(client: Any, n: int, namespace: str) -> tuple[list[dict[str, Any]], int]:
    """About 4 in 5 invalid documents the CRD schema lets through (asked with a server-side dry run, so
    they reach the reconciler), the rest valid; and how many invalid ones the schema refused."""
    want_invalid, want_valid = n - n // 5, n // 5
    invalid: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    refused = 0
    sem = asyncio.Semaphore(16)

    async def admitted(body: dict[str, Any]) -> bool:
        async with sem:
            try:
                await client.request("POST", WORKSPACE.path(namespace), query=[("dryRun", "All")], body=body,
                                     idempotent=False)
                return True
            except (InvalidError, APIError):  # 422 from the schema
                return False
            except ValueError:  # NaN/Infinity: not JSON, the client refuses to send it
                return False

    candidates = _candidates(n * 15, namespace)
    bad = [c for c in candidates if validate_workspace(c)]
    valid = [c for c in candidates if not validate_workspace(c)][:want_valid]
    for start in range(0, len(bad), 64):
        batch = bad[start:start + 64]
        for body, ok in zip(batch, await asyncio.gather(*(admitted(b) for b in batch)), strict=True):
            if ok:
                invalid.append(body)
            else:
                refused += 1
        if len(invalid) >= want_invalid:
            break
    chosen = invalid[:want_invalid] + valid
    for i, body in enumerate(chosen):
        body["metadata"]["name"] = f"bad-{i:03d}"
    return chosen, refused


def _for_apiserver(doc: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    annotations = meta.get("annotations")
    doc["metadata"] = {"name": name, "namespace": namespace}
    if isinstance(annotations, dict) and all(isinstance(v, str) for v in annotations.values()):
        doc["metadata"]["annotations"] = annotations
    doc["apiVersion"] = "kaito.sh/v1beta1"  # the version the client posts to
    doc["kind"] = "Workspace"
    return doc


async def test_invalid_workspaces_on_a_real_apiserver_create_nothing(private_plane: ControlPlane, fleet: Fleet,
                                                                    tmp_path: Path) -> None:
    row = record(ReliabilityRow("bad input: applied to the apiserver (operator, no webhook)"))
    ns = "bad-input"
    private_plane.kubectl("create", "namespace", ns)
    await fleet.start([ns])
    kubeconfig, _ = operator_kubeconfig(private_plane, tmp_path)
    op = OperatorProcess(kubeconfig, tmp_path, identity="bad-input")
    op.start()
    stored_invalid: dict[str, tuple[str, list[FieldError]]] = {}
    stored_valid: set[str] = set()
    refused = 0
    try:
        await eventually(op.ready, 90, message="operator /readyz", describe=op.tail)
        sample, refused = await _sample(fleet.client, APPLY, ns)
        for body in sample:
            try:
                stored = await fleet.client.create(body, kind=WORKSPACE)
            except (InvalidError, ConflictError, APIError):
                refused += 1  # the CRD's schema refused it after all: a rejection too, and nothing exists
                continue
            except ValueError:
                refused += 1  # NaN/Infinity is not JSON: the client refuses to send it at all
                continue
            errors = validate_workspace(stored)
            if errors:
                stored_invalid[stored["metadata"]["name"]] = (stored["metadata"]["uid"], errors)
            else:
                stored_valid.add(stored["metadata"]["name"])
        assert len(stored_invalid) >= APPLY * 0.5, (len(stored_invalid), len(stored_valid), refused)
        # The written-down cases, with the outcome the test states (not what the validator computes).
        written: dict[str, str | None] = {}
        for i, (_case, doc, denied_for) in enumerate(WRITTEN):
            body = _for_apiserver(doc, f"written-{i:02d}", ns)
            try:
                stored = await fleet.client.create(body, kind=WORKSPACE)
            except (InvalidError, ConflictError, APIError, ValueError):
                assert denied_for is not None, f"the apiserver refused {_case!r}, which must be allowed"
                refused += 1
                continue
            written[stored["metadata"]["name"]] = denied_for
            if denied_for is not None:
                stored_invalid[stored["metadata"]["name"]] = (stored["metadata"]["uid"], [])

        async def all_reported() -> bool:
            items = {w["metadata"]["name"]: w for w in fleet.objects("workspaces")}
            return all((condition(items.get(n), "WorkspaceReady") or {}).get("reason") == "ValidationFailed"
                       for n in stored_invalid) and all(condition(items.get(n), "WorkspaceReady") for n in written)

        started = time.monotonic()
        await eventually(all_reported, 120, message="every invalid Workspace reported ValidationFailed",
                         describe=lambda: str(fleet.not_ready(3)))
        row.max_convergence_s = time.monotonic() - started
        await asyncio.sleep(5)  # let the valid ones get going too, then look for anything made for an invalid one
        items = {w["metadata"]["name"]: w for w in fleet.objects("workspaces")}
        wrong: list[str] = []
        for name, denied_for in written.items():
            cond = condition(items.get(name), "WorkspaceReady") or {}
            if denied_for is None and cond.get("reason") == "ValidationFailed":
                wrong.append(f"{name}: refused, must be allowed: {cond.get('message')}")
            elif denied_for is not None and denied_for not in str(cond.get("message", "")):
                wrong.append(f"{name}: want a ValidationFailed naming {denied_for}, got {cond}")
        for name, (_uid, errors) in stored_invalid.items():
            message = (condition(items[name], "WorkspaceReady") or {}).get("message", "")
            for error in errors:
                assert (f"{error.path}: " if error.path else error.message) in message, (name, error, message)
        made: list[str] = []
        invalid_uids = {uid for uid, _ in stored_invalid.values()}
        for kind in (DEPLOYMENT, STATEFULSET, JOB, SERVICE, CONFIGMAP, REVISION):
            for obj in (await fleet.client.list(kind, ns)).items:
                owners = {ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []}
                if owners & invalid_uids:
                    made.append(f"{kind.kind} {obj['metadata']['name']}")
        for machine in (await fleet.client.list(MACHINE, label_selector={"kaito.sh/workspacenamespace": ns})).items:
            if machine["metadata"]["labels"].get("kaito.sh/workspace") in stored_invalid:
                made.append(f"Machine {machine['metadata']['name']}")
        row.objects_created = len(stored_valid)
        row.objects_left = len(made)
        row.faults_injected = len(stored_invalid) + refused
        row.notes = (f"{len(sample)} applied; {refused} more candidates refused by the CRD schema (dry run), "
                     f"{len(stored_invalid)} stored but invalid "
                     f"(ValidationFailed, nothing made), {len(stored_valid)} valid; "
                     f"{len(written)} written-down cases stored, {len(wrong)} with another outcome than written")
        assert not wrong, "written-down cases with another outcome:\n" + "\n".join(wrong)
        assert not made, f"resources created for invalid Workspaces: {made}"
        assert op.alive(), op.tail()
        row.passed = True
    finally:
        await fleet.delete_workspaces()
        op.stop()
