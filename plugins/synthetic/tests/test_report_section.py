"""The Teacher note of a run's report (hook ``dualcurate_report_sections`` of the ``reference``
plugin): shown, above the stage table, when the reference distiller stood in for a teacher
(its stage ran, or the traces are of engine ``reference``); absent otherwise."""

from __future__ import annotations

from pathlib import Path

from dualcurate.report_sections import ORDER, RunView
from dualcurate.schema import Sample, Trace
from dualcurate.store import RunStore
from dualcurate_synthetic.plugin import reference, synthetic
from dualcurate_synthetic.report import NOTE, report_sections


def make_run(root: Path, distiller: str | None = "reference",
             engine: str | None = "reference") -> RunStore:
    """source (synthetic) -> distill (``distiller``) -> verify, the traces of ``engine``."""
    store = RunStore(root)
    rows = [Sample(source="synthetic", domain="digit-sum", question=f"q{i}",
                   answer=str(i)).to_row() for i in range(3)]
    store.write_shard("source", 0, rows)
    stages = [("source", "source", "synthetic")]
    if engine is not None:
        traced = [{**r, "traces": [Trace(text=f"<answer>{r['answer']}</answer>",
                                         answer=r["answer"], engine=engine).model_dump()]}
                  for r in rows]
        store.write_shard("verify", 0, traced)
        stages.append(("verify", "verifier", "rule-verify"))
    if distiller is not None:
        stages.insert(1, ("distill", "distiller", distiller))
    for name, kind, plugin in stages:
        store.stage_record(name).update(kind=kind, plugin=plugin, status="done")
    store.save_manifest()
    return store


def test_note_when_the_reference_distiller_ran(tmp_path):
    make_run(tmp_path / "run")
    (section,) = report_sections(RunView(tmp_path / "run"))
    assert (section.title, section.anchor) == ("Teacher", "teacher")
    assert section.order < ORDER["stages"]  # above the stage table, as before
    assert section.html == ('<p class="note">No teacher model was run. The traces are the '
                            "synthetic source&#x27;s step-by-step reference solutions, "
                            "written in the four-phase format by the `reference` distiller: "
                            "they stand in for a teacher offline. Run a real teacher with "
                            "`curate --plugin vllm-distill` (or hf-distill / "
                            "openai-distill).</p>")
    assert section.markdown == f"> {NOTE}"
    assert section.data == {"note": NOTE} and section.summary is None
    assert reference.dualcurate_report_sections(RunView(tmp_path / "run"))[0].anchor == "teacher"


def test_note_from_the_traces_alone(tmp_path):
    """Traces of engine reference (say, a distill stage recorded under another name)."""
    make_run(tmp_path / "run", distiller=None)
    (section,) = report_sections(RunView(tmp_path / "run"))
    assert section.markdown == f"> {NOTE}"


def test_note_when_the_stage_ran_but_wrote_no_rows_yet(tmp_path):
    make_run(tmp_path / "run", engine=None)
    assert len(report_sections(RunView(tmp_path / "run"))) == 1


def test_no_note_with_a_real_teacher(tmp_path):
    make_run(tmp_path / "run", distiller="openai-distill", engine="openai")
    view = RunView(tmp_path / "run")
    assert report_sections(view) == []
    assert reference.dualcurate_report_sections(view) is None


def test_no_note_without_traces(tmp_path):
    make_run(tmp_path / "run", distiller=None, engine=None)
    assert report_sections(RunView(tmp_path / "run")) == []


def test_one_plugin_object_draws_it():
    """The note belongs to the reference distiller's entry point: one note, not two."""
    assert not hasattr(synthetic, "dualcurate_report_sections")


def test_in_the_report_and_card_above_the_stages(tmp_path, plugin_host, register_plugin,
                                                 monkeypatch):
    import dualcurate.report as report_module
    from dualcurate.hub import dataset_card
    from dualcurate.report import write_report

    register_plugin(reference, name="reference")
    store = make_run(tmp_path / "run")
    html_path, md_path = write_report(tmp_path / "run", host=plugin_host)
    html, md = html_path.read_text(), md_path.read_text()
    assert html.index('<section id="teacher"') < html.index('<section id="stages"')
    assert 'data-plugin="reference"' in html
    assert md.index(f"## Teacher\n\n> {NOTE}") < md.index("## Stages")
    monkeypatch.setattr(report_module, "report_host", lambda manifest=None: plugin_host)
    card = dataset_card(store, "verify", "me/data", 3, has_images=False)
    assert card.index(f"## Teacher\n\n> {NOTE}") < card.index("## Pipeline")
