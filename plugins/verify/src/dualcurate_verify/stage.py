"""``rule-verify``: structure and answer rules over every trace of every row."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from dualcurate import StageConfig, Verifier
from dualcurate.formats import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, render_think
from dualcurate_verify.extract import split_think
from dualcurate_verify.rules import CheckResult, check
from dualcurate_verify.symbolic import default_pool

if TYPE_CHECKING:
    from dualcurate import StageContext
    from dualcurate.plugins import PluginHost

Row = dict[str, Any]


class RuleVerifierConfig(StageConfig):
    """Options of ``rule-verify`` (``[verify]`` in a recipe)."""

    require_think: bool = Field(True, description="a trace needs exactly one <think>…</think> "
                                "block before its answer (an opening tag the chat template "
                                "already wrote may be missing)")
    min_words: int = Field(0, ge=0, description="traces with fewer words in the whole response "
                           "are invalid (MMFineReason drops responses under 100–200 words)")
    min_caption_words: int = Field(0, ge=0, description="rows whose caption has fewer words "
                                   "get every trace invalid (label 'short-caption')")
    error_markers: list[str] = Field(default_factory=lambda: ["[ERROR]"],
                                     description="a response containing one of these is a "
                                     "failed generation (label 'error')")
    repetition_ngram: int = Field(50, ge=1, description="n of the repetition filter (tokens)")
    repetition_count: int = Field(3, ge=2, description="an n-gram occurring this often in the "
                                  "think block makes the trace invalid (the solution written "
                                  "after it is never counted)")
    require_answer_tag: bool = Field(False, description="the final answer must be in "
                                     "<answer>…</answer> after the think block (label "
                                     "'answer-tag')")
    answer_tag_exempt_sources: list[str] = Field(
        default_factory=list, description="rows from these sources (the `source` column) skip "
        "the answer-tag check (datasets whose answers are free text)")
    symbolic_timeout: float = Field(5.0, gt=0, description="seconds per math-verify call; "
                                    "longer gives 'undecided' (timeout)")
    workers: int = Field(2, ge=1, description="threads (and math-verify processes) per stage")

    runtime_fields: ClassVar[frozenset[str]] = frozenset({"workers"})


def trace_response(trace: Row) -> str:
    """The full response of a trace: its text, with the engine-separated reasoning put back
    in a think block when the text has none."""
    text = trace.get("text") or ""
    reasoning = trace.get("reasoning") or ""
    if reasoning and THINK_OPEN not in text and THINK_CLOSE not in text:
        return render_think(reasoning, text)
    return text or (trace.get("answer") or "")


def repeated_ngram(tokens: list[str], n: int, times: int) -> tuple[str, ...] | None:
    """The first n-gram of ``tokens`` (words without whitespace, as ``str.split`` gives) that
    occurs ``times`` times or more, or None. Each n-gram is counted by its text in the
    space-joined tokens (a slice: a 50-gram's tuple cost three times as much to build and
    hash)."""
    if len(tokens) < n * times:
        return None
    text = " ".join(tokens)
    starts, at = [], 0
    for token in tokens:
        starts.append(at)
        at += len(token) + 1
    starts.append(at)
    counts: dict[str, int] = {}
    for i in range(len(tokens) - n + 1):
        gram = text[starts[i]:starts[i + n] - 1]
        seen = counts.get(gram, 0) + 1
        counts[gram] = seen
        if seen >= times:
            return tuple(tokens[i:i + n])
    return None


def _invalid(label: str, reason: str) -> CheckResult:
    return CheckResult(verdict="invalid", method="rule", label=label, reason=reason)


class RuleVerifier(Verifier):
    """Gives each trace a verdict from rules: structure (truncation, think block, length,
    repetition), then the answer against the row's gold (``check``). Adds ``n_verified`` and
    ``consistent`` (at least one trace verified correct) to each row."""

    name = "rule-verify"
    Config = RuleVerifierConfig
    requires = ("answer",)
    provides = ("traces", "n_verified", "consistent")
    version = "1"

    config: RuleVerifierConfig

    #: Answer rules only (``check``: no think block, length, repetition, caption or answer-tag
    #: rule). Scorers that use the recipe's verifier by name (difficulty rollouts, GRPO/GSPO
    #: rewards, Dual Tuning's evaluation) set it on the stage they make: they score answers,
    #: the structure of a teacher's trace is the verify stage's business. Not an option, so
    #: it never changes a verify stage's signature.
    answer_only: bool = False

    def preflight(self, host: PluginHost) -> list[str]:
        if importlib.util.find_spec("math_verify") is None:
            return ["math-verify is not installed; pip install 'math-verify>=0.7' (the "
                    "symbolic step of rule-verify needs it)"]
        return []

    def setup(self, ctx: StageContext) -> None:
        pool = default_pool()
        pool.max_workers = max(pool.max_workers, self.config.workers)

    # one trace ------------------------------------------------------------------------------
    def structure(self, trace: Row) -> CheckResult | None:
        """The structural verdict of a trace, or None when its structure is fine."""
        if trace.get("error"):
            return _invalid("error", f"generation failed: {trace['error']}")
        if trace.get("truncated") or trace.get("finish_reason") == "length":
            return _invalid("truncated", "the response was cut off at the token limit")
        response = trace_response(trace)
        marker = next((m for m in self.config.error_markers if m and m in response), None)
        if marker is not None:
            return _invalid("error", f"the response contains the error marker {marker!r}")
        split = split_think(response)
        if split.blocks > 1:
            return _invalid("think", f"{split.blocks} think blocks; exactly one is allowed "
                            "(a <think> after the block's </think> opens another)")
        if split.unterminated:
            return _invalid("think", "the <think> block is never closed")
        if self.config.require_think and split.blocks == 0:
            return _invalid("think", "no <think>…</think> block before the answer")
        if not split.answer_part.strip():
            return _invalid("no-answer", "nothing after the think block")
        words = len(response.replace(THINK_OPEN, " ").replace(THINK_CLOSE, " ").split())
        if words < self.config.min_words:
            return _invalid("too-short", f"{words} words; at least {self.config.min_words} "
                            "are required (min_words)")
        # measured in the think block only: a worked solution after it (Qwen3-VL-Thinking
        # writes one) legitimately repeats its own phrasing
        gram = repeated_ngram((split.reasoning or "").split(), self.config.repetition_ngram,
                              self.config.repetition_count)
        if gram is not None:
            return _invalid("repetition", f"a {self.config.repetition_ngram}-token sequence "
                            f"occurs {self.config.repetition_count}+ times in the think block "
                            f"(starting {' '.join(gram[:8])!r})")
        return None

    def row_structure(self, row: Row) -> CheckResult | None:
        """A verdict for every trace of a row that fails a row-level rule (its caption)."""
        if self.config.min_caption_words:
            words = len(str(row.get("caption") or "").split())
            if words < self.config.min_caption_words:
                return _invalid("short-caption", f"the caption has {words} words; at least "
                                f"{self.config.min_caption_words} are required "
                                "(min_caption_words)")
        return None

    def answer_tag(self, row: Row, trace: Row) -> CheckResult | None:
        """The answer-tag check (``require_answer_tag``), unless the row's source is exempt."""
        if not self.config.require_answer_tag or \
                str(row.get("source") or "") in self.config.answer_tag_exempt_sources:
            return None
        part = split_think(trace_response(trace)).answer_part
        if ANSWER_OPEN not in part.lower() or ANSWER_CLOSE not in part.lower():
            return _invalid("answer-tag", "no <answer>…</answer> after the think block "
                            "(require_answer_tag)")
        return None

    def verify_trace(self, row: Row, trace: Row) -> CheckResult:
        """Structure first, then the answer rules."""
        problem = None if self.answer_only else \
            self.row_structure(row) or self.structure(trace) or self.answer_tag(row, trace)
        if problem is not None:
            return problem
        return check(str(row.get("answer") or ""), trace_response(trace), row.get("question"),
                     answer_type=row.get("answer_type"), choices=list(row.get("choices") or []),
                     budget=self.config.symbolic_timeout)

    # rows -------------------------------------------------------------------------------------
    def process(self, rows: list[Row], ctx: StageContext) -> list[Row]:
        out = [self._prepare(row) for row in rows]
        jobs = [(ri, ti) for ri, row in enumerate(out) for ti in range(len(row["traces"]))]
        results = self._verify_all(out, jobs)
        for (ri, ti), result in zip(jobs, results, strict=True):
            apply_result(out[ri]["traces"][ti], result)
        return [finish_row(row) for row in out]

    def _verify_all(self, rows: list[Row], jobs: list[tuple[int, int]]) -> list[CheckResult]:
        def one(job: tuple[int, int]) -> CheckResult:
            row = rows[job[0]]
            return self.verify_trace(row, row["traces"][job[1]])

        if self.config.workers <= 1 or len(jobs) <= 1:
            return [one(job) for job in jobs]
        with ThreadPoolExecutor(self.config.workers) as pool:
            return list(pool.map(one, jobs))

    @staticmethod
    def _prepare(row: Row) -> Row:
        row = dict(row)
        traces = row.get("traces")
        if traces is None and isinstance(row.get("response"), str):
            traces = [{"text": row["response"]}]  # a bare (gold, response) row, as `curate check`
        row["traces"] = [t.model_dump() if hasattr(t, "model_dump") else dict(t)
                         for t in (traces or [])]
        return row


def apply_result(trace: Row, result: CheckResult) -> None:
    """Write a verdict onto a trace (and the extracted answer where the trace had none)."""
    trace["verdict"] = result.verdict
    trace["method"] = result.method
    trace["label"] = result.label
    trace["reason"] = result.reason
    if not trace.get("answer") and result.answer:
        trace["answer"] = result.answer


def finish_row(row: Row) -> Row:
    """``n_verified``: traces verified correct; ``consistent``: the teacher's answers agree
    with the gold, i.e. at least one trace is verified correct."""
    row["n_verified"] = sum(1 for t in row["traces"] if t.get("verdict") == "correct")
    row["consistent"] = row["n_verified"] > 0
    return row
