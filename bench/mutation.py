"""Mutation testing of the security-critical modules with mutmut 3 (not in CI: too slow).

Each module is mutated on its own, in a scratch copy of the tree under ``bench/.work/mutation/``,
against the nearest tests only (the table below), so one run takes minutes, not hours::

    python bench/mutation.py results policy        # some modules
    python bench/mutation.py --all                 # every module in the table
    python bench/mutation.py --list                # the table

For each module the score is ``killed / (mutants - equivalent)``; timeouts count as killed (the
mutant made the tests hang). Surviving mutants are printed with their diff and written to
``bench/.work/mutation/<module>/survivors.txt``; each must be killed by a new test or listed as
equivalent, with its reason, in ``EQUIVALENT`` below (keyed by mutmut's mutant name). The table in
docs/mutation.md between the ``mutation:begin`` / ``mutation:end`` markers is rewritten with the
measured scores; modules not run keep their previous row.

The configuration is this file plus ``[tool.mutmut]`` in pyproject.toml (pytest options shared by
every module). Needs ``mutmut>=3.8,<4`` (the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work" / "mutation"
DOC = ROOT / "docs" / "mutation.md"
BEGIN, END = "<!-- mutation:begin -->", "<!-- mutation:end -->"
#: seconds the nearest tests may take on one hand mutant before it counts as caught (a hang)
HAND_TIMEOUT = 180
HAND_BEGIN, HAND_END = "<!-- hand:begin -->", "<!-- hand:end -->"


@dataclass(frozen=True)
class Module:
    source: str  # path under src/
    tests: tuple[str, ...]  # the nearest tests: files or node ids under tests/, then pytest options


MODULES: dict[str, Module] = {
    # verdicts and the findings collector
    "results": Module("airlock/results.py", ("tests/unit/test_results.py", "tests/unit/test_collect.py")),
    "collect": Module("airlock/_scan/collect.py", ("tests/unit/test_collect.py",)),
    # policy core
    "policy": Module("airlock/policy.py", ("tests/unit/test_policy.py",)),
    "catalogue": Module(
        "airlock/_analysis/catalogue.py",
        (
            "tests/unit/test_catalogue.py",
            "tests/unit/test_policy.py",
            # walks every entry in the pinned environment (imports torch, numpy ...: ~30 s)
            "tests/analysis/test_catalogue.py::test_every_hand_entry_exists",
        ),
    ),
    # all of profiles.py runs at import time, which mutmut cannot mutate: hand mutants only
    "profiles": Module("airlock/_analysis/profiles.py", ("tests/unit/test_policy.py",)),
    # pickle machine and findings
    # the end-to-end attack and frame suites (tests/analysis, torch.load in subprocesses: ~40 s a
    # mutant) are left out of the loop; the unit tables pin every opcode, offset and limit
    "pickle_vm": Module(
        "airlock/_analysis/pickle_vm.py",
        ("tests/unit/test_pickle_vm.py", "tests/unit/test_pickle_quirks.py"),
    ),
    "pickle_findings": Module(
        "airlock/_analysis/pickle_findings.py",
        ("tests/unit/test_pickle_findings.py", "tests/unit/test_pickle_quirks.py"),
    ),
    # the shipped-templates suite (tests/formats_hf/test_hf_template.py, ~10 s a mutant) is left
    # out of the loop; the unit tables hold clean near misses next to every rule
    "template": Module(
        "airlock/_analysis/template.py",
        (
            "tests/unit/test_template.py",
            "tests/unit/test_template_fold.py",
            "tests/unit/test_pickle_quirks.py",
        ),
    ),
    # the bound on a rendering's work; the exhausting spellings proven with the real renderer
    # (tests/text/test_attack_templates.py, subprocesses: ~60 s) are left out of the loop
    **{
        name: Module(
            f"airlock/_analysis/{name}.py",
            ("tests/unit/test_template_cost.py", "tests/unit/test_template.py"),
        )
        for name in (
            "template_cost",
            "template_cost_values",
            "template_cost_base",
            "template_cost_stmts",
            "template_cost_exprs",
            "template_cost_calls",
            "template_cost_flow",
        )
    },
    "template_fold": Module(
        "airlock/_analysis/template_fold.py",
        (
            "tests/unit/test_template_fold.py",
            "tests/unit/test_template.py",
            "tests/unit/test_pickle_quirks.py",
        ),
    ),
    # format readers
    "zip": Module(
        "airlock/_formats/zip_reader.py",
        (
            "tests/unit/test_zip_reader.py",
            "tests/formats/test_zip_reader.py",
            "tests/formats/test_zip_parse.py",
        ),
    ),
    "safetensors": Module(
        "airlock/_formats/safetensors.py",
        # the differential fuzz tests (reference loader, seconds each) are left out of the loop
        (
            "tests/unit/test_safetensors.py",
            "tests/unit/test_limits.py",
            "tests/formats_hf/test_hf_safetensors.py",
            "-k",
            "not fuzz and not reference",
        ),
    ),
    # 875 mutants: the end-to-end tests (tests/formats_hf/test_hf_gguf.py: full scans, fuzzing,
    # real loaders in subprocesses) are left out of the loop; the unit tests pin every rule
    "gguf": Module("airlock/_formats/gguf.py", ("tests/unit/test_gguf.py",)),
    "npy": Module(
        "airlock/_formats/npy.py",
        # the hypothesis fuzz tests (300 examples each) are left out of the loop
        ("tests/unit/test_npy.py", "tests/formats/test_npy.py", "-k", "not mangled and not only_raises"),
    ),
    # integrity
    "integrity_compare": Module(
        "airlock/integrity/_compare.py", ("tests/unit/test_integrity.py", "tests/integrity")
    ),
    # the reference-signer interop and property tests (minutes) are left out of the loop
    "integrity_verify": Module(
        "airlock/integrity/_verify.py",
        (
            "tests/unit/test_integrity_verify.py",
            "tests/unit/test_integrity.py",
            "tests/integrity/test_verify_lock.py",
            "tests/integrity/test_sigstore_offline.py",
            "tests/integrity/test_outsider_findings.py",
        ),
    ),
    "integrity_manifest": Module(
        "airlock/integrity/_manifest.py",
        (
            "tests/unit/test_integrity_manifest.py",
            "tests/unit/test_integrity.py",
            "tests/integrity/test_hash.py",
            "tests/integrity/test_cli.py",
        ),
    ),
    # sandbox layers
    "seccomp": Module("airlock/sandbox/_seccomp.py", ("tests/unit/test_sandbox_layers.py",)),
    "frames": Module(
        "airlock/sandbox/_frames.py",
        ("tests/unit/test_frames.py", "tests/unit/test_sandbox_layers.py"),
    ),
    # the worker and its jobs played by the test (real processes, real sockets); tests/sandbox starts real ones
    "worker": Module(
        "airlock/sandbox/_worker.py", ("tests/unit/test_worker.py", "tests/unit/test_sandbox_layers.py")
    ),
    # gateway
    "gateway_keys": Module("airlock/gateway/_keys.py", ("tests/unit/test_gateway_units.py",)),
    # real HTTP against build_app(), workers in process (tests/unit/_gateway_server.py): seconds, not minutes
    "gateway_app": Module("airlock/gateway/_app.py", ("tests/unit/test_gateway_app.py",)),
    "gateway_audit": Module("airlock/gateway/_audit.py", ("tests/unit/test_gateway_units.py",)),
    # the limiter protocol and its Admit record; the buckets themselves are in _memory_limiter
    # what runs before authentication: connection caps, header deadlines, strict headers, buckets
    "gateway_guard": Module("airlock/gateway/_guard.py", ("tests/unit/test_gateway_guard.py",)),
    # KServe tensors checked before a worker sees them: datatype ranges, shapes, counts, binary framing
    "gateway_tensors": Module("airlock/gateway/_tensors.py", ("tests/unit/test_gateway_tensors.py",)),
    "gateway_limiter": Module("airlock/gateway/_limiter.py", ("tests/unit/test_gateway_limiter.py",)),
    "gateway_memory_limiter": Module(
        "airlock/gateway/_memory_limiter.py", ("tests/unit/test_gateway_limiter.py",)
    ),
    # loading
    # unit tests only (seconds); the end-to-end tests/load (torch in subprocesses, minutes) stay out of the loop
    "load_model": Module(
        "airlock/_load/model.py", ("tests/unit/test_load_model.py", "tests/unit/test_load_graph.py")
    ),
    "load_graph": Module("airlock/_load/graph.py", ("tests/unit/test_load_graph.py",)),
    "load_arrays": Module("airlock/_load/arrays.py", ("tests/unit/test_load_arrays.py",)),
}

#: Surviving mutants judged equivalent (no test can tell them apart from the original), with the
#: reason. Keys are mutmut mutant names (``module.x_function__mutmut_N``).
EQUIVALENT: dict[str, str] = {
    "airlock.results.xǁVerdictǁworst__mutmut_2": (
        "`>` -> `>=`: ranks are distinct, so equal rank means the same (singleton) verdict"
    ),
    "airlock._scan.collect.xǁCollectorǁadd__mutmut_5": (
        '"" -> "XXXX": any constant in the key slot used when a callable is present is the same key'
    ),
    "airlock.policy.xǁPolicyǁclassify__mutmut_52": (
        "`len(parts) > 1` -> `>= 1`: with one part the walk's range(-1, -1, -1) is empty"
    ),
    "airlock.policy.xǁPolicyǁfrom_file__mutmut_3": (
        'read_text(encoding="utf-8") -> encoding=None: the locale encoding, UTF-8 here and in CI '
        "(Python coerces the C locale to UTF-8); kept explicit for other locales"
    ),
    "airlock.policy.xǁPolicyǁfrom_file__mutmut_5": '"utf-8" -> "UTF-8": the same codec',
    "airlock._formats.safetensors.x__check_layout__mutmut_3": (
        "last_name None -> \"\": it is only read as `last_name or ''`"
    ),
    "airlock._formats.safetensors.x__check_tensor__mutmut_112": (
        "_elements cap 1 << 64 -> 2 << 64: any count above 2**64 takes the same 'needs more than' branch"
    ),
    "airlock._formats.safetensors.x__check_tensor__mutmut_113": "_elements cap 1 << 64 -> 1 << 65: as #112",
    "airlock._analysis.pickle_vm.xǁMachineǁ_op_dict__mutmut_20": (
        "zip(strict=True) -> None/False/dropped: an odd count is refused just before, so the halves are always the same length"
    ),
    "airlock._analysis.pickle_vm.xǁMachineǁ_op_dict__mutmut_23": (
        "zip(strict=True) -> None/False/dropped: an odd count is refused just before, so the halves are always the same length"
    ),
    "airlock._analysis.pickle_vm.xǁMachineǁ_op_dict__mutmut_28": (
        "zip(strict=True) -> None/False/dropped: an odd count is refused just before, so the halves are always the same length"
    ),
    "airlock._analysis.pickle_vm.xǁMachineǁ_op_setitems__mutmut_17": (
        "zip(strict=True) -> None/False/dropped: an odd count is refused just before, so the halves are always the same length"
    ),
    "airlock._analysis.pickle_vm.xǁMachineǁ_op_setitems__mutmut_20": (
        "zip(strict=True) -> None/False/dropped: an odd count is refused just before, so the halves are always the same length"
    ),
    "airlock._analysis.pickle_vm.xǁMachineǁ_op_setitems__mutmut_25": (
        "zip(strict=True) -> None/False/dropped: an odd count is refused just before, so the halves are always the same length"
    ),
    "airlock._analysis.pickle_vm.xǁMachineǁ_op_tuple_n__mutmut_9": (
        "_pop(pos) -> _pop(None): unreachable, the length is checked before popping, so the pop never underflows"
    ),
    "airlock._analysis.pickle_findings.x__analyse_stream__mutmut_15": "Machine(..., build_hook=None) -> the argument dropped: None is the default",
    "airlock._analysis.pickle_findings.x__as_plain_pickle__mutmut_9": "Machine(..., build_hook=None) -> the argument dropped: None is the default",
    "airlock._analysis.pickle_findings.x__as_file_reader__mutmut_45": "Machine(..., build_hook=None) -> the argument dropped: None is the default",
    "airlock._analysis.pickle_findings.x__analyse_stream__mutmut_30": "_skipped.append(at) -> append(None): the list is only tested for being non-empty",
    "airlock._analysis.pickle_findings.x__analyse_stream__mutmut_31": "the counting pass (scan_data_pickle) skipped: it is an optimisation for plain data, on which the machine makes the same findings and errors (it only costs time)",
    "airlock._analysis.pickle_findings.x__analyse_stream__mutmut_85": "_findings(..., data=None): the data parameter of _findings is never read",
    "airlock._analysis.pickle_findings.x__as_plain_pickle__mutmut_14": "_findings(..., data=None): the data parameter of _findings is never read",
    "airlock._analysis.pickle_findings.x__as_file_reader__mutmut_49": "_findings(..., data=None): the data parameter of _findings is never read",
    "airlock._analysis.pickle_findings.x__key__mutmut_4": '"" -> "XXXX" in the dedupe key: keys are only compared with keys made by the same function',
    "airlock._analysis.pickle_findings.x__nested_pickle__mutmut_43": "trailing_ok=legacy -> None: a legacy stream has max_pickles=5, which returns before the trailing check; otherwise legacy is False, as falsy as None",
    "airlock._analysis.pickle_findings.x__nested_pickle__mutmut_44": "lenient=False -> None: only read in boolean tests, as falsy as False",
    "airlock._analysis.template.xǁ_GenerationTagǁparse__mutmut_12": "Scope(body, lineno=None): the Scope's own line is never shown (it is an allowed node that no rule reports; its body keeps its lines)",
    "airlock._analysis.template.xǁ_GenerationTagǁparse__mutmut_14": "Scope(body) without lineno: as #12",
    "airlock._analysis.template.xǁ_Walkerǁadd__mutmut_16": "`0 < line` -> `0 <= line`: jinja numbers lines from 1, so line 0 never occurs",
    "airlock._analysis.pickle_findings.x__findings__mutmut_57": "_call_findings(call, data=None, ...): the data parameter of _call_findings is never read",
    "airlock._analysis.template.x_analyse_template__mutmut_16": 'simplefilter("ignore", DeprecationWarning) -> every category: on the pinned Python (3.11) parsing warns only with DeprecationWarning (invalid escapes in strings)',
    "airlock._analysis.template_fold.x_fold__mutmut_3": "a Const's value always returned: jinja's parser makes Consts of None, bools, ints, floats and strings only, and None is returned either way",
    "airlock._analysis.template_fold.x_fold__mutmut_63": "an absent slice bound folded too: fold(None) is None, the same as the absent bound",
    "airlock._analysis.template_fold.x_fold__mutmut_77": "zip(strict=True) -> None: the bounds list is built from the given list, same length",
    "airlock._analysis.template_fold.x_fold__mutmut_80": "zip(strict=True) dropped: as #77",
    "airlock._analysis.template_fold.x_fold__mutmut_81": "zip(strict=True) -> False: as #77",
    "airlock._analysis.template_fold.x_fold__mutmut_90": "`b if isinstance(b, int) else None` -> always b: every bound is None or an int there (checked just before)",
    "airlock._analysis.template_fold.x__binary__mutmut_7": "the int * str swap taken for any int left or str right: every other pair folds to None either way",
    "airlock._analysis.template_fold.x__fold_filter__mutmut_65": "_binary(jn.Mod(), ...) -> _binary(None, ...): not Add or Mul, so the % branch is taken either way",
    "airlock._analysis.pickle_findings.x__as_plain_pickle__mutmut_28": "_error_issue(error, 0) -> None: the index is only tested for truth, None is as falsy as 0",
    "airlock._analysis.pickle_findings.x__as_file_reader__mutmut_68": "_error_issue(error, 0) -> None: as the plain reading's",
    "airlock._analysis.template.x__expr__mutmut_60": '`"()" if not node.items else ...` -> always the join: an empty join renders the same "()"',
    "airlock._formats.npy.x__typestr__mutmut_16": (
        '`kind not in "mM"` -> `"XXmMXX"`: kind is one character the type-string regex matched, never X'
    ),
    "airlock._formats.npy.xǁNpyReaderǁread__mutmut_71": '"latin-1" -> "LATIN-1": the same codec',
    "airlock.integrity._manifest.x_build_manifest__mutmut_15": (
        "entries = [] -> None: both branches assign entries before it is read"
    ),
    "airlock.integrity._manifest.xǁManifestǁto_json__mutmut_48": (
        "json.dumps(ensure_ascii=False) -> None: None is falsy, read the same as False"
    ),
    "airlock.integrity._verify.xǁVerifiedǁopen__mutmut_29": (
        'getattr(os, "O_CLOEXEC", 0) default -> None: the default is read only where os lacks the flag; '
        "Linux (the only platform of the memfd copy) has it"
    ),
    "airlock.integrity._verify.xǁVerifiedǁopen__mutmut_32": (
        'getattr(os, "O_CLOEXEC", 0) default -> no default: the default is read only where os lacks the flag; '
        "Linux (the only platform of the memfd copy) has it"
    ),
    "airlock.integrity._verify.xǁVerifiedǁopen__mutmut_35": (
        'getattr(os, "O_CLOEXEC", 0) default -> 1: the default is read only where os lacks the flag; '
        "Linux (the only platform of the memfd copy) has it"
    ),
    "airlock.integrity._verify.xǁVerifiedǁopen__mutmut_41": (
        'getattr(os, "O_NOFOLLOW", 0) default -> None: the default is read only where os lacks the flag; '
        "Linux (the only platform of the memfd copy) has it"
    ),
    "airlock.integrity._verify.xǁVerifiedǁopen__mutmut_44": (
        'getattr(os, "O_NOFOLLOW", 0) default -> no default: the default is read only where os lacks the flag; '
        "Linux (the only platform of the memfd copy) has it"
    ),
    "airlock.integrity._verify.xǁVerifiedǁopen__mutmut_47": (
        'getattr(os, "O_NOFOLLOW", 0) default -> 1: the default is read only where os lacks the flag; '
        "Linux (the only platform of the memfd copy) has it"
    ),
    "airlock.integrity._verify.xǁVerifiedǁopen__mutmut_56": (
        'getattr(os, "O_NONBLOCK", 0) default -> None: the default is read only where os lacks the flag; '
        "Linux (the only platform of the memfd copy) has it"
    ),
    "airlock.integrity._verify.xǁVerifiedǁopen__mutmut_59": (
        'getattr(os, "O_NONBLOCK", 0) default -> no default: the default is read only where os lacks the flag; '
        "Linux (the only platform of the memfd copy) has it"
    ),
    "airlock.integrity._verify.xǁVerifiedǁopen__mutmut_62": (
        'getattr(os, "O_NONBLOCK", 0) default -> 1: the default is read only where os lacks the flag; '
        "Linux (the only platform of the memfd copy) has it"
    ),
    "airlock.integrity._verify.xǁVerifiedǁopen__mutmut_76": (
        "os.set_blocking(fd, True) -> False: the fd is a regular file by then (S_ISREG checked), and "
        "O_NONBLOCK does not change reads of regular files on Linux"
    ),
    "airlock.integrity._verify.x__verified_copy__mutmut_46": (
        "seals = 0 -> 1: 1 is F_SEAL_SEAL, which the loop ORs in anyway"
    ),
    "airlock.integrity._verify.x_verify__mutmut_69": (
        'rel != ".." -> "XX..XX": a signature at ".." is the model\'s parent folder, which reading the '
        "signature refused before (not a file)"
    ),
    "airlock.integrity._verify.x_verify__mutmut_9": "root -> None passed to _load_source, which never reads it",
    "airlock._formats.gguf.x__bytes_look_like_jinja__mutmut_13": (
        "chunk overlap of 1 byte -> 2: markers are 2 bytes, one byte of overlap already sees each; "
        "a wider window only finds markers that are in the string"
    ),
    "airlock._formats.gguf.x__text__mutmut_4": '"utf-8" -> "UTF-8": the same codec',
    "airlock._formats.gguf.x__read__mutmut_16": 'int.from_bytes(..., "big") -> no byteorder: "big" is the default',
    "airlock._formats.gguf.x__read__mutmut_98": 'key.split("\\0", 1)[0] -> split("\\0")[0]: the first piece is the same',
    "airlock._formats.gguf.x__read__mutmut_101": 'key.split("\\0", 1)[0] -> split("\\0", 2)[0]: as #98',
    "airlock._formats.gguf.x__read__mutmut_125": "as #98 (the llama.cpp key recorded)",
    "airlock._formats.gguf.x__read__mutmut_128": "as #98 (the llama.cpp key recorded)",
    "airlock._formats.gguf.x__read__mutmut_170": '"utf-8" -> "UTF-8": the same codec',
    "airlock._formats.gguf.x_is_template_key__mutmut_5": "as x__read__mutmut_98",
    "airlock._formats.gguf.x_is_template_key__mutmut_8": "as x__read__mutmut_98",
    "airlock._formats.gguf.x__skip_strings__mutmut_16": (
        "pos > size - 8 -> >=: the fast check only hands over to cur.need(1, 8), which lets exactly 8 "
        "remaining bytes through"
    ),
    "airlock._formats.gguf.x__skip_strings__mutmut_18": "pos > size - 8 -> > size - 9: the same as #16",
    "airlock._formats.gguf.x__skip_strings__mutmut_40": (
        "pos > size -> >=: a string ending at the end of the file hands over to cur.need(0, 1), which passes"
    ),
    "airlock._formats.gguf.x__check_data__mutmut_17": (
        'last = "" -> None: only named in an overlap, and the first span always sets it (begin < 0 is impossible)'
    ),
    "airlock._formats.gguf.x__check_data__mutmut_18": 'last = "" -> "XXXX": as #17',
    "airlock._formats.zip_reader.x__torch_prefix__mutmut_10": 'name.split("/", 1)[0] -> split("/")[0]: the same first piece',
    "airlock._formats.zip_reader.x__torch_prefix__mutmut_14": 'name.split("/", 1)[0] -> split("/", 2)[0]: as #10',
    "airlock._formats.zip_reader.x__read_torch__mutmut_9": "torchscript = False -> None: both falsy, only tested for truth",
    "airlock._formats.zip_reader.x__pickle__mutmut_8": (
        "a memoryview wrapped again in memoryview(): the same bytes, still a memoryview"
    ),
    "airlock._formats.zip_reader.x__torchscript__mutmut_38": '"utf-8" -> "UTF-8": the same codec',
    "airlock._formats.zip_reader.x__torchscript__mutmut_47": (
        "continue -> break in the loop over _content's items: the content is its last item, so both end the loop"
    ),
    "airlock._formats.zip_reader.x__record__mutmut_9": (
        "a stored record read through the budget instead of member_head: stored members cost the budget "
        "nothing, and a record reaches this branch only when its stored size is its declared size (<= 64)"
    ),
    "airlock._formats.zip_reader.x__record__mutmut_13": (
        "member_head(..., 64) -> None (no cap): the record reaches it only when stored and declared sizes "
        "agree and are at most 64"
    ),
    "airlock._formats.zip_reader.x__record__mutmut_17": "member_head(..., 64) -> 65: as #13",
    "airlock._formats.zip_reader.x__record__mutmut_24": (
        "decompressed record cut at [:64] -> [:65]: decompression stops at the declared size, at most 64"
    ),
    "airlock._formats.zip_reader.x__record__mutmut_27": "content[:64] -> [:65] in the message: content is at most 64 bytes",
    "airlock.sandbox._frames.x__sendmsg_all__mutmut_19": (
        "batch pending[:512] -> [:513]: any batch up to IOV_MAX (1024 on Linux) sends the same bytes; "
        "only the number of sendmsg calls differs (more than 1024 buffers is tested)"
    ),
    "airlock.sandbox._frames.x__sendmsg_all__mutmut_31": (
        "sent = 0 -> None after a partial buffer: only read as the truth value of `while sent and pending`"
    ),
    "airlock.sandbox._frames.x_encode_header__mutmut_4": (
        "allow_nan=False -> None: json.dumps tests `if not allow_nan`, so None refuses NaN the same way"
    ),
    "airlock.sandbox._frames.x_encode_header__mutmut_12": '"utf-8" -> "UTF-8": the same codec',
    "airlock.sandbox._frames.x_recv_frame__mutmut_19": (
        "`n < len(prefix)` -> `<=`: at n == 16 exact_into gets an empty view and reads nothing"
    ),
    "airlock.sandbox._frames.x_send_frame__mutmut_9": (
        'memoryview.cast("B") -> cast("b"): signed bytes, the same nbytes and the same bytes on the wire'
    ),
    "airlock.sandbox._frames.xǁ_Receiverǁread_into__mutmut_27": (
        'received fds read as array("I") instead of "i": the kernel installs descriptors >= 0 and below '
        "RLIMIT_NOFILE (< 2**31), whose unsigned and signed readings are equal"
    ),
    "airlock.sandbox._frames.xǁ_Receiverǁread_into__mutmut_28": (
        "`len(data) - len(data) % 4` -> `+`: SCM_RIGHTS data is whole ints (the kernel copies whole "
        "descriptors even when truncating), so the remainder is 0 and the slice is the same"
    ),
    "airlock.sandbox._frames.xǁ_Receiverǁread_into__mutmut_44": (
        "self.first = False -> None: `first` is only read as a truth value"
    ),
    "airlock.sandbox._seccomp.x_own_pid_rules__mutmut_5": (
        "resolve_syscall(Arch.NATIVE) -> (None): Arch.NATIVE is 0 (SCMP_ARCH_NATIVE), which None becomes"
    ),
    "airlock.sandbox._seccomp.x_seccomp_available__mutmut_1": (
        "compile_filter(FilterStage.JOB) -> (None): every stage that is not LAUNCH compiles the job "
        "filter, so the probe compiles the same program"
    ),
    "airlock._load.arrays.x__transform__mutmut_43": (
        "_negate_float(real, part -> None): the name only tells half precision apart (its NaN rule); "
        "a negated complex tensor is complex64/128 here (complex32 negation is refused before)"
    ),
    "airlock._load.arrays.x__transform__mutmut_44": (
        "_negate_float(real, part, ref -> None): ref only names the storage in the half-precision NaN "
        "refusal, which float32/float64 parts never reach"
    ),
    "airlock._load.arrays.x__prepared__mutmut_56": (
        "`st.swap > 1` -> `>= 1`: byte-swapping in units of one byte is the identity"
    ),
    "airlock.sandbox._worker.xǁSandboxǁ_track_job__mutmut_16": (
        "parent = -1 -> None when /proc/PID/stat is unreadable: neither is the worker's pid, the pidfd is closed"
    ),
    "airlock.sandbox._worker.xǁSandboxǁ_track_job__mutmut_17": (
        "parent = -1 -> +1: pid 1 is never the worker (airlock's own child), the pidfd is closed the same way"
    ),
    "airlock.sandbox._worker.xǁSandboxǁ_track_job__mutmut_18": "parent = -1 -> -2: not a pid either",
    "airlock.sandbox._worker.x__read_definition__mutmut_15": (
        "read(_MAX_DEFINITION + 1) -> read(None): the same verdict on every file (over 1 MiB refused); "
        "the bound only caps memory"
    ),
    "airlock.sandbox._worker.x__read_definition__mutmut_17": (
        "read(_MAX_DEFINITION + 1) -> + 2: both exceed the 1 MiB bound the same way"
    ),
    "airlock.sandbox._worker.x__read_definition__mutmut_27": '"utf-8" -> "UTF-8": the same codec',
    "airlock.sandbox._worker.x_load_state_dict__mutmut_16": (
        "limits=DEFAULT_LIMITS dropped from gate(): DEFAULT_LIMITS is gate's default"
    ),
    "airlock.sandbox._worker.xǁSandboxǁclose__mutmut_4": (
        "wait(timeout=5) -> 6 before the kill: only how long close() lets the worker exit by itself"
    ),
    "airlock.sandbox._worker.xǁWorkerǁ__init____mutmut_47": (
        "_spawn(deadline) -> _spawn(None): _spawn then takes now + wall_seconds, the same deadline "
        "microseconds later"
    ),
    "airlock.sandbox._worker.xǁWorkerǁ__init____mutmut_75": (
        "the load request sent without a deadline: a few hundred bytes always fit a fresh socket's "
        "buffer, so the send never waits (the reply has its deadline)"
    ),
    "airlock.sandbox._worker.xǁWorkerǁstate_dict__mutmut_6": (
        "the state_dict request sent without a deadline: 24 bytes, as above; the reply has its deadline"
    ),
    "airlock._load.graph.xǁ_Walkerǁ_global__mutmut_15": (
        '("torch.storage", "torch") -> "XXtorchXX": torch.UntypedStorage already matched the `torch.*Storage` rule above'
    ),
    "airlock._load.graph.xǁ_Walkerǁ_global__mutmut_16": ('"torch" -> "TORCH" in the same test: as #15'),
    "airlock._load.graph.xǁ_Walkerǁ_ordered_dict__mutmut_34": (
        "zip(strict=True) -> strict=None: the machine refuses SETITEMS with an odd number of items, so the halves are equal"
    ),
    "airlock._load.graph.xǁ_Walkerǁ_ordered_dict__mutmut_37": ("strict dropped: as #34"),
    "airlock._load.graph.xǁ_Walkerǁ_ordered_dict__mutmut_42": ("strict=False: as #34"),
    "airlock._load.graph.xǁ_Walkerǁ_plain_object__mutmut_4": (
        '`call.kind == "newobj"` -> `!=`: dead clause, `args and ... args == ()` is never true (non-empty args are never ())'
    ),
    "airlock._load.graph.xǁ_Walkerǁ_plain_object__mutmut_5": ('"newobj" -> "XXnewobjXX": as #4'),
    "airlock._load.graph.xǁ_Walkerǁ_plain_object__mutmut_6": ('"newobj" -> "NEWOBJ": as #4'),
    "airlock._load.graph.x__strides__mutmut_7": (
        "a non-integer size becomes 1 instead of 0 in the strides: check_view refuses such a size before the strides matter"
    ),
    "airlock._load.graph.x__numpy_dtype__mutmut_8": ('order "<" -> None: only ever compared with ">"'),
    "airlock._load.graph.x__numpy_dtype__mutmut_9": ('order "<" -> "XX<XX": only ever compared with ">"'),
    "airlock._load.graph.x__codecs_encode__mutmut_16": ('"latin-1" -> "LATIN-1": the same codec'),
    "airlock._load.graph.x__tensor__mutmut_7": ('metadata None -> "" for v1: only read as `if metadata:`'),
    "airlock._load.graph.x__qtensor__mutmut_88": (
        "`and` -> `or` in an assert made true by the all(isinstance(...)) check just above"
    ),
    "airlock._load.graph.x__sparse__mutmut_58": (
        "zip(strict=False) -> strict=None: the same (non-strict) zip"
    ),
    "airlock._load.graph.x__sparse__mutmut_61": ("strict=False dropped: the default"),
    "airlock.sandbox._worker.xǁSandboxǁ__init____mutmut_27": (
        "the 'timed out' fallback in `exc or 'timed out'` is dead: an exception is always truthy"
    ),
    "airlock.sandbox._worker.xǁSandboxǁ__init____mutmut_28": ("as #27"),
    "airlock.sandbox._worker.xǁSandboxǁ_stderr__mutmut_4": (
        "wait(timeout=2) -> 3: only how long a worker that did not start is waited for"
    ),
    "airlock.sandbox._worker.xǁSandboxǁ_spawn__mutmut_7": (
        "socketpair(AF_UNIX, SOCK_STREAM) -> socketpair(SOCK_STREAM): SOCK_STREAM is 1 == AF_UNIX, the type defaults to SOCK_STREAM"
    ),
    "airlock.sandbox._worker.xǁSandboxǁ_spawn__mutmut_8": (
        "socketpair(AF_UNIX) : the type defaults to SOCK_STREAM"
    ),
    "airlock.sandbox._worker.xǁSandboxǁ_spawn__mutmut_60": (
        "`pid > 1` -> `>= 1`: pid 1 is never the worker's child, _track_job drops it"
    ),
    "airlock.sandbox._worker.xǁSandboxǁexit_status__mutmut_7": (
        "`time.monotonic() < deadline` -> `<=`: equal floats for one instant, then recv_frame's own deadline check"
    ),
    "airlock.gateway._keys.x_create_key__mutmut_8": "secrets.token_urlsafe(32) -> (None): the default is 32 bytes",
    "airlock.gateway._keys.x_hash_token__mutmut_4": '"ascii" -> "ASCII": the same codec',
    "airlock.gateway._audit.x__head_mac__mutmut_9": '"ascii" -> "ASCII": the same codec',
    "airlock.gateway._audit.x_chain_hash__mutmut_14": '"ascii" -> "ASCII": the same codec',
    "airlock.gateway._audit.x_chain_hash__mutmut_18": '"ascii" -> "ASCII": the same codec',
    "airlock.gateway._audit.x_chain_hash__mutmut_26": '"sha256" -> "SHA256": OpenSSL digest names are case-insensitive',
    "airlock.gateway._audit.x_read_head__mutmut_5": (
        "read(4097) -> read(): the same verdict on every file (over 4096 bytes is refused); "
        "the bound only caps memory on a huge file"
    ),
    "airlock.gateway._audit.x_read_head__mutmut_7": "read(4097) -> read(4098): both exceed the 4096-byte bound the same way",
    "airlock.gateway._audit.x_read_head__mutmut_14": 'data = None -> "": neither is a dict, both refused',
    "airlock.gateway._audit.x_verify_chain__mutmut_7": "reached = None when a head is recorded: falsy like False; unused otherwise",
    "airlock.gateway._audit.x_write_head__mutmut_47": '"ascii" -> "ASCII": the same codec',
    "airlock.gateway._audit.x_write_head__mutmut_30": (
        "O_NOFOLLOW | O_CLOEXEC -> O_NOFOLLOW & O_CLOEXEC (both dropped): O_CREAT | O_EXCL already refuses a "
        "symbolic link at the path, and no exec happens while the descriptor is open"
    ),
    "airlock.gateway._audit.x_write_head__mutmut_31": (
        "O_EXCL & O_NOFOLLOW (both dropped, O_CLOEXEC kept): the temporary name was unlinked just before, so "
        "O_CREAT makes a fresh file; a link raced in between is the only difference, not testable in process"
    ),
    "airlock.gateway._audit.x_load_key__mutmut_19": "secrets.token_hex(32) -> (None): the default is 32 bytes",
    "airlock.gateway._audit.x_load_key__mutmut_22": '"ascii" -> "ASCII": the same codec',
    "airlock.gateway._audit.x_load_key__mutmut_39": '"ascii" -> "ASCII": the same codec',
    # gateway app: header names are case-insensitive and Starlette lower-cases them both ways
    # (Headers.get lower-cases the key; Response and MutableHeaders lower-case names they store)
    "airlock.gateway._app.x__auth__mutmut_8": 'headers.get("AUTHORIZATION"): Starlette lower-cases the key',
    "airlock.gateway._app.x__body__mutmut_4": 'headers.get("CONTENT-LENGTH"): Starlette lower-cases the key',
    "airlock.gateway._app.x__header_length__mutmut_4": (
        'headers.get("INFERENCE-HEADER-CONTENT-LENGTH"): Starlette lower-cases the key'
    ),
    "airlock.gateway._app.x__auth__mutmut_41": '"www-authenticate": Starlette lower-cases response header names',
    "airlock.gateway._app.x__auth__mutmut_42": '"WWW-AUTHENTICATE": Starlette lower-cases response header names',
    "airlock.gateway._app.x__limited__mutmut_31": '"retry-after": Starlette lower-cases response header names',
    "airlock.gateway._app.x__limited__mutmut_32": '"RETRY-AFTER": Starlette lower-cases response header names',
    "airlock.gateway._app.x_infer__mutmut_329": '"X-REQUEST-ID": MutableHeaders lower-cases the name it sets',
    "airlock.gateway._app.x__reply__mutmut_86": '"inference-header-content-length": Starlette lower-cases response header names',
    "airlock.gateway._app.x__reply__mutmut_87": '"INFERENCE-HEADER-CONTENT-LENGTH": Starlette lower-cases response header names',
    "airlock.gateway._app.x__reply__mutmut_116": '"content-length": Starlette lower-cases response header names',
    "airlock.gateway._app.x__reply__mutmut_117": '"CONTENT-LENGTH": Starlette lower-cases response header names',
    "airlock.gateway._app.x__reply__mutmut_99": (
        "size < _STREAM_ABOVE: a reply of exactly 1 MiB is streamed in slices instead of sent whole, "
        "with the same status, headers and bytes"
    ),
    # _http_error is registered for HTTPException only, and Starlette raises only 404 and 405 here
    "airlock.gateway._app.x__http_error__mutmut_3": "isinstance(...) or True: only HTTPException reaches this handler",
    "airlock.gateway._app.x__http_error__mutmut_4": "else 501: only HTTPException reaches this handler",
    "airlock.gateway._app.x__http_error__mutmut_7": "status in _TEXTS or True: Starlette raises only 404 and 405 here",
    "airlock.gateway._app.x__http_error__mutmut_9": "else 501: Starlette raises only 404 and 405 here, both in _TEXTS",
    # Starlette gives a function route without methods GET (and HEAD), and upper-cases method names
    "airlock.gateway._app.x_build_app__mutmut_4": "a GET route with methods=None: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_7": "a GET route with methods omitted: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_11": 'a GET route with methods=["get"]: Starlette makes it GET',
    "airlock.gateway._app.x_build_app__mutmut_14": "a GET route with methods=None: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_17": "a GET route with methods omitted: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_21": 'a GET route with methods=["get"]: Starlette makes it GET',
    "airlock.gateway._app.x_build_app__mutmut_24": "a GET route with methods=None: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_27": "a GET route with methods omitted: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_31": 'a GET route with methods=["get"]: Starlette makes it GET',
    "airlock.gateway._app.x_build_app__mutmut_34": "a GET route with methods=None: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_37": "a GET route with methods omitted: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_41": 'a GET route with methods=["get"]: Starlette makes it GET',
    "airlock.gateway._app.x_build_app__mutmut_44": "a GET route with methods=None: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_47": "a GET route with methods omitted: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_51": 'a GET route with methods=["get"]: Starlette makes it GET',
    "airlock.gateway._app.x_build_app__mutmut_54": "a GET route with methods=None: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_57": "a GET route with methods omitted: Starlette makes it GET",
    "airlock.gateway._app.x_build_app__mutmut_61": 'a GET route with methods=["get"]: Starlette makes it GET',
    "airlock.gateway._app.x_build_app__mutmut_71": 'the infer route with methods=["post"]: Starlette upper-cases method names',
    # the default text of _error is never used: every caller passes a status in _TEXTS or a text
    # of its own, and _http_error maps any other status to 500
    "airlock.gateway._app.x__error__mutmut_5": "_TEXTS.get(status, None): the default is never reached",
    "airlock.gateway._app.x__error__mutmut_7": "_TEXTS.get(status): the default is never reached",
    "airlock.gateway._app.x__error__mutmut_8": '"XXerrorXX" default: never reached',
    "airlock.gateway._app.x__error__mutmut_9": '"ERROR" default: never reached',
    # the 499 for a caller that hung up is never delivered; its audit row (status, decision) is tested
    "airlock.gateway._app.x__body__mutmut_46": "499 text None: the reply goes to a caller that has hung up",
    "airlock.gateway._app.x__body__mutmut_48": "499 text dropped: the reply goes to a caller that has hung up",
    "airlock.gateway._app.x__body__mutmut_50": "499 text changed: the reply goes to a caller that has hung up",
    "airlock.gateway._app.x__body__mutmut_51": "499 text changed: the reply goes to a caller that has hung up",
    "airlock.gateway._app.x__slices__mutmut_5": (
        'memoryview cast("b") instead of "B": one-byte items either way, the same bytes are sent'
    ),
    "airlock.gateway._app.x_infer__mutmut_11": "entered = None instead of False: only ever tested for truth",
    "airlock.gateway._app.x_infer__mutmut_57": "Admit(None, ...) for the concurrency refusal: _limited never reads `allowed`",
    "airlock.gateway._app.x_infer__mutmut_63": "Admit(True, ...) for the concurrency refusal: _limited never reads `allowed`",
    **{
        f"airlock.gateway._app.x_infer__mutmut_{n}": (
            "the fallback after the try block when no answer was set: not reached (every way out sets one)"
        )
        for n in range(299, 304)
    },
    "airlock.gateway._app.x_infer__mutmut_391": "the logged duration times 1.001: a measurement no test can know exactly",
    # gateway tensors
    "airlock.gateway._tensors.x__datatype__mutmut_4": "`byteorder == '>'` test dropped: newbyteorder('<') of a little-endian or byte-order-free dtype is that dtype",
    "airlock.gateway._tensors.x__exact__mutmut_6": "np.array(data, dtype=object) accepts every list np.asarray(data) accepted before it; the except is a guard",
    "airlock.gateway._tensors.x__exact__mutmut_11": 'kind in "XXiuXX": a one-letter numpy kind (b, i, u, f here) is in it iff it is in "iu"',
    "airlock.gateway._tensors.x__exact__mutmut_22": 'kind in "XXiuXX": as #11',
    "airlock.gateway._tensors.x__exact__mutmut_27": 'kind in "XXiuXX": as #11',
    "airlock.gateway._tensors.x__from_json__mutmut_15": 'kind in "XXiuXX": as _exact #11',
    "airlock.gateway._tensors.x__from_json__mutmut_48": 'kind in "XXiuXX": as _exact #11',
    "airlock.gateway._tensors.x__exact__mutmut_16": "reshape(-2): numpy takes any negative size as 'infer' (-1)",
    "airlock.gateway._tensors.x_encode_outputs__mutmut_7": "reshape(-2): numpy takes any negative size as 'infer' (-1)",
    "airlock.gateway._tensors.x__exact__mutmut_37": (
        "reshape(None) of the exact integers: _from_json reshapes them to the declared shape right after "
        "(the element count was checked)"
    ),
    "airlock.gateway._tensors.x__exact__mutmut_42": "reshape(None) of the exact floats: as #37",
    "airlock.gateway._tensors.x__exact__mutmut_44": "np.array of Python floats with dtype=None: float64 is the default",
    "airlock.gateway._tensors.x__exact__mutmut_46": "np.array of Python floats without dtype: float64 is the default",
    "airlock.gateway._tensors.x__matches__mutmut_11": "zip strict=None: the lengths were compared just before",
    "airlock.gateway._tensors.x__matches__mutmut_14": "zip without strict: the lengths were compared just before",
    "airlock.gateway._tensors.x__matches__mutmut_15": "zip strict=False: the lengths were compared just before",
    "airlock.gateway._tensors.x__outputs__mutmut_43": 'bool(params.get("binary_data", None)): bool(None) is False',
    "airlock.gateway._tensors.x__outputs__mutmut_45": 'bool(params.get("binary_data")): bool(None) is False',
    "airlock.gateway._tensors.x_parse_infer_request__mutmut_225": 'bool(params.get("binary_data_output", None)): bool(None) is False',
    "airlock.gateway._tensors.x_parse_infer_request__mutmut_227": 'bool(params.get("binary_data_output")): bool(None) is False',
    "airlock.gateway._tensors.x__parameters__mutmut_10": "the separator of the allowed keys: every table of allowed keys has one key",
    "airlock.gateway._tensors.x__parse_json__mutmut_3": "parse_json_strict(body, None): its message (which names `what`) is replaced by a fixed phrase",
    "airlock.gateway._tensors.x_encode_outputs__mutmut_8": "the non-finite path taken for more arrays: for finite values it yields the same list as tolist()",
    "airlock.gateway._tensors.x_encode_outputs__mutmut_9": "the non-finite path taken for every float array: for finite values the same list as tolist()",
    "airlock.gateway._tensors.x_encode_outputs__mutmut_14": "not bool(None): every float array takes the element-wise path, which yields the same list for finite values",
    "airlock.gateway._tensors.x_encode_reply__mutmut_26": "always data.cast('B'): the array was made C-contiguous just before, so the branch is always this one",
    "airlock.gateway._tensors.x_encode_reply__mutmut_27": "always tobytes(): the same bytes as the buffer view (a copy)",
    "airlock.gateway._tensors.x_encode_reply__mutmut_28": "tobytes() for contiguous arrays: the same bytes (a copy)",
    "airlock.gateway._tensors.x_encode_reply__mutmut_31": 'data.cast("b"): one-byte items either way, the same bytes are sent',
    "airlock.gateway._tensors.x_encode_reply__mutmut_50": '"utf-8" -> "UTF-8": the same codec',
    "airlock.gateway._memory_limiter.xǁMemoryLimiterǁleave__mutmut_12": (
        "leave: get(tenant, 0) -> get(tenant, 1): for a tenant never counted max(0, 0 - 1) and "
        "max(0, 1 - 1) are both 0; a counted tenant never reads the default"
    ),
    "airlock.gateway._memory_limiter.xǁMemoryLimiterǁleave_generation__mutmut_12": (
        "leave_generation: get(tenant, 0) -> get(tenant, 1): the same reason as leave's"
    ),
}


@dataclass(frozen=True)
class HandMutant:
    """A bug mutmut cannot make: mutmut 3 mutates function bodies only, not properties, module-level
    tables (verdict ranks, catalogue entries, allowlists) or class attributes. Each is applied to a
    scratch copy of src/ alone and the module's nearest tests must fail."""

    module: str
    what: str
    old: str
    new: str


HAND_MUTANTS: tuple[HandMutant, ...] = (
    HandMutant(
        "results",
        "ranks of SUSPICIOUS and ERROR swapped",
        "Verdict.SUSPICIOUS: 1, Verdict.ERROR: 2, Verdict.MALICIOUS: 3}",
        "Verdict.SUSPICIOUS: 2, Verdict.ERROR: 1, Verdict.MALICIOUS: 3}",
    ),
    HandMutant(
        "results",
        "ERROR and MALICIOUS rank equal",
        "Verdict.ERROR: 2, Verdict.MALICIOUS: 3}",
        "Verdict.ERROR: 3, Verdict.MALICIOUS: 3}",
    ),
    HandMutant(
        "results",
        "exit codes of ERROR and SUSPICIOUS swapped",
        "Verdict.ERROR: 2, Verdict.SUSPICIOUS: 3}",
        "Verdict.ERROR: 3, Verdict.SUSPICIOUS: 2}",
    ),
    HandMutant(
        "results", "a scan that analysed nothing is CLEAN", "return Verdict.ERROR\n", "return Verdict.CLEAN\n"
    ),
    HandMutant(
        "results",
        "INFO weighs as SUSPICIOUS",
        "Severity.INFO: Verdict.CLEAN",
        "Severity.INFO: Verdict.SUSPICIOUS",
    ),
    HandMutant(
        "results",
        "rank property reads the exit-code table",
        "return _RANKS[self]",
        "return _EXIT_CODES[self]",
    ),
    HandMutant(
        "results",
        "report verdict is the first file's",
        "return Verdict.worst([f.verdict for f in self.files])",
        "return self.files[0].verdict",
    ),
    HandMutant(
        "policy",
        "allowlist matched on a prefix instead of the exact name",
        "allowed = self._table.get(dotted)",
        "allowed = next((v for k, v in self._table.items() if dotted.startswith(k)), None)",
    ),
    HandMutant(
        "policy",
        "allowlist matched on a suffix",
        "allowed = self._table.get(dotted)",
        "allowed = next((v for k, v in self._table.items() if k.endswith(dotted.rpartition('.')[2]) and dotted.endswith(k.rpartition('.')[2])), None)",
    ),
    HandMutant(
        "policy",
        "allowance checked before the catalogue",
        "        hit = lookup(dotted)\n        if hit is not None:\n            return Classification(Decision.DANGEROUS, dotted, hit[1])\n        if dotted in self.allow:",
        "        hit = lookup(dotted)\n        if hit is not None and dotted not in self.allow:\n            return Classification(Decision.DANGEROUS, dotted, hit[1])\n        if dotted in self.allow:",
    ),
    HandMutant(
        "policy",
        "dynamic globals judged like static ones",
        "        if dynamic:\n",
        "        if dynamic and False:\n",
    ),
    HandMutant("catalogue", "misspelt catalogue module", '"subprocess": _PROC', '"subprocesss": _PROC'),
    HandMutant(
        "catalogue", "misspelt catalogue name", '"builtins.getattr": _ATTR', '"builtins.getatr": _ATTR'
    ),
    HandMutant("catalogue", "catalogue entry dropped", '"socket": _NET, ', ""),
    HandMutant(
        "catalogue",
        "lookup on a text prefix",
        '    parts = dotted.split(".")\n    derived = _derived_entries()',
        "    for name, cat in {**DANGEROUS_MODULES, **DANGEROUS_NAMES}.items():\n"
        "        if dotted.startswith(name):\n"
        "            return name, cat\n"
        '    parts = dotted.split(".")\n    derived = _derived_entries()',
    ),
    HandMutant(
        "profiles",
        "allowlist entry misspelt",
        '"torch._utils._rebuild_tensor_v2",',
        '"torch._utils._rebuild_tensor_v2x",',
    ),
    HandMutant(
        "profiles",
        "dangerous name added to an allowlist",
        '"builtins.slice",',
        '"builtins.slice", "builtins.getattr",',
    ),
    HandMutant(
        "safetensors",
        "header bound off by 8 (length checked against the size, not size - 8)",
        "if 8 + length > size:",
        "if length > size:",
    ),
    HandMutant(
        "seccomp",
        "connect allowed in jobs",
        '"socket", "socketpair", "connect", "bind",',
        '"socket", "socketpair", "bind",',
    ),
    HandMutant("seccomp", "bind allowed in jobs", '"connect", "bind", "listen",', '"connect", "listen",'),
    HandMutant("seccomp", "bpf allowed", '"bpf", "perf_event_open",', '"perf_event_open",'),
    HandMutant("seccomp", "CLONE_NEWUSER missing", "    0x10000000,  # CLONE_NEWUSER\n", ""),
    HandMutant(
        "seccomp", "launch sockets of any family", "sc.Arg(0, sc.NE, _AF_UNIX)", "sc.Arg(0, sc.EQ, 999)"
    ),
    HandMutant(
        "seccomp",
        "own-process calls checked on the wrong argument",
        "rule(deny, name, arg(0, ne, 0))",
        "rule(deny, name, arg(1, ne, 0))",
    ),
    HandMutant(
        "seccomp",
        "setpriority for a process group or user",
        '    rule(deny, "setpriority", arg(0, ne, _PRIO_PROCESS))\n',
        "",
    ),
    HandMutant(
        "seccomp", "setpriority for another process", '    rule(deny, "setpriority", arg(1, ne, 0))\n', ""
    ),
    HandMutant(
        "seccomp",
        "ioprio_set for a group or user",
        '    rule(deny, "ioprio_set", arg(0, ne, _IOPRIO_WHO_PROCESS))\n',
        "",
    ),
    HandMutant(
        "seccomp", "ioprio_set for another process", '    rule(deny, "ioprio_set", arg(1, ne, 0))\n', ""
    ),
    HandMutant("seccomp", "clone3 allowed", '    rule(sc.ERRNO(errno.ENOSYS), "clone3")', "    pass"),
    HandMutant(
        "seccomp",
        "clone3 refused with EPERM (libc does not fall back to clone)",
        'rule(sc.ERRNO(errno.ENOSYS), "clone3")',
        'rule(sc.ERRNO(errno.EPERM), "clone3")',
    ),
    HandMutant(
        "seccomp",
        "any unshare at launch",
        'rule(deny, "unshare", arg(0, ne, _CLONE_NEWNS))',
        'rule(deny, "unshare", arg(0, ne, _CLONE_NEWNS), arg(1, ne, 0))',
    ),
    HandMutant(
        "seccomp",
        "fork-like clone allowed in jobs",
        'rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))',
        'rule(deny, "clone", sc.Arg(0, sc.EQ, 0))',
    ),
    HandMutant("seccomp", "launch socket refused with EPERM", "sc.ERRNO(errno.EAFNOSUPPORT)", "deny"),
    HandMutant(
        "seccomp", "AF_UNSPEC sockets at launch", "sc.Arg(0, sc.NE, _AF_UNIX)", "sc.Arg(0, sc.GT, _AF_UNIX)"
    ),
    HandMutant(
        "seccomp",
        "fcntl owner command compared on 64 bits",
        'rule(deny, "fcntl", arg(1, masked, 0xFFFFFFFF, cmd))',
        'rule(deny, "fcntl", arg(1, sc.EQ, cmd))',
    ),
    HandMutant(
        "seccomp", "F_SETSIG allowed", "_FCNTL_OWNER: Final = (8, 10, 15)", "_FCNTL_OWNER: Final = (8, 15)"
    ),
    HandMutant(
        "seccomp",
        "SIOCSPGRP allowed",
        "_IOCTL_OWNER: Final = (0x8901, 0x8902)",
        "_IOCTL_OWNER: Final = (0x8901,)",
    ),
    HandMutant(
        "seccomp",
        "ioctl owner command compared on 64 bits",
        'rule(deny, "ioctl", arg(1, masked, 0xFFFFFFFF, cmd))',
        'rule(deny, "ioctl", arg(1, sc.EQ, cmd))',
    ),
    HandMutant(
        "seccomp",
        "tkill/tgkill may signal the worker",
        'for name in ("kill", "tkill", "tgkill"):',
        'for name in ("kill",):',
    ),
    HandMutant(
        "seccomp",
        "kill of pid 1 compared on 64 bits",
        "rule(deny, name, sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, 1))",
        "rule(deny, name, sc.Arg(0, sc.EQ, 1))",
    ),
    HandMutant(
        "seccomp",
        "kill of the own process group allowed",
        'rule(deny, "kill", sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, 0))',
        'rule(deny, "kill", sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, 0xFFFFFFFF))',
    ),
    HandMutant(
        "seccomp",
        "kill of negative pids allowed",
        'rule(deny, "kill", sc.Arg(0, sc.MASKED_EQ, 0x80000000, 0x80000000))',
        'rule(deny, "kill", sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, 0xFFFFFFFF))',
    ),
    HandMutant(
        "seccomp",
        "job stage rules at launch, launch rules in jobs",
        "if stage is FilterStage.LAUNCH:",
        "if stage is FilterStage.JOB:",
    ),
    HandMutant(
        "seccomp", "refusals with EACCES", "deny = sc.ERRNO(errno.EPERM)", "deny = sc.ERRNO(errno.EACCES)"
    ),
    HandMutant("seccomp", "shmat allowed in jobs", '"shmget", "shmat",', '"shmget",'),
    HandMutant("seccomp", "mq_open allowed in jobs", '"mq_open", "mq_unlink",', '"mq_unlink",'),
    HandMutant("seccomp", "lsetxattr allowed in jobs", '"setxattr", "lsetxattr",', '"setxattr",'),
    HandMutant("seccomp", "pidfd_send_signal allowed in jobs", ' "pidfd_send_signal",', ""),
    HandMutant("seccomp", "kcmp allowed", '"kcmp", ', ""),
    HandMutant("seccomp", "io_uring_enter allowed", '"io_uring_enter", ', ""),
    HandMutant("seccomp", "fsopen allowed", '"fsopen", ', ""),
    HandMutant("seccomp", "migrate_pages on any process", '"migrate_pages", ', ""),
    HandMutant("seccomp", "CLONE_NEWTIME missing", "    0x00000080,  # CLONE_NEWTIME\n", ""),
    HandMutant(
        "seccomp", "rt_sigqueueinfo left out of the own-pid guard", '    ("rt_sigqueueinfo", 0),\n', ""
    ),
    HandMutant("seccomp", "signal guard on the wrong argument", '("tgkill", 0),', '("tgkill", 1),'),
    HandMutant(
        "load_model",
        "numel skips the first dimension",
        "for dim in self.shape:",
        "for dim in self.shape[1:]:",
    ),
    HandMutant(
        "load_model",
        "nbytes ignores the item size",
        "return self.numel * self.dtype.itemsize",
        "return self.numel",
    ),
    HandMutant("load_model", "65 dimensions allowed", "MAX_DIMS: Final = 64", "MAX_DIMS: Final = 65"),
    HandMutant(
        "load_model",
        "logical size bound of 2**64",
        "MAX_LOGICAL_BYTES: Final = 2**63 - 1",
        "MAX_LOGICAL_BYTES: Final = 2**64 - 1",
    ),
    HandMutant("load_graph", "nesting bound off by one", "MAX_DEPTH: Final = 200", "MAX_DEPTH: Final = 201"),
    HandMutant(
        "load_graph",
        "parameters with state not realised",
        '{"torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"}',
        '{"torch._utils._rebuild_parameter"}',
    ),
    HandMutant(
        "load_graph",
        "Parameter not a tensor type",
        ', "torch.nn.parameter.Parameter"})',
        "})",
    ),
    HandMutant(
        "load_graph",
        "numpy 2 reconstruct path dropped",
        ', "numpy._core.multiarray._reconstruct"})',
        "})",
    ),
    HandMutant(
        "load_graph",
        "sparse CSC components named like CSR",
        '"torch.sparse_csc": ("ccol_indices", "row_indices", "values"),',
        '"torch.sparse_csc": ("crow_indices", "col_indices", "values"),',
    ),
    HandMutant("load_arrays", "int64 negation refused", '"int32", "int64", "uint8"', '"int32", "uint8"'),
    HandMutant(
        "load_arrays",
        "float64 sign bit wrong",
        "8: 0x8000_0000_0000_0000}",
        "8: 0x4000_0000_0000_0000}",
    ),
    HandMutant(
        "load_arrays",
        "lazy negation of complex32 accepted",
        '(name in _COMPLEX and name != "complex32")',
        "(name in _COMPLEX)",
    ),
    HandMutant(
        "load_arrays",
        "complex64 not treated as complex",
        '_COMPLEX: Final = {"complex32": "float16", "complex64": "float32", ',
        '_COMPLEX: Final = {"complex32": "float16", ',
    ),
    HandMutant(
        "frames",
        "header cap off by one",
        "if header_len > caps.max_header_bytes:",
        "if header_len > caps.max_header_bytes + 1:",
    ),
    HandMutant(
        "frames",
        "frame cap ignores the header",
        "if header_len + payload_len > caps.max_frame_bytes:",
        "if payload_len > caps.max_frame_bytes:",
    ),
    HandMutant(
        "frames", "no deadline on the socket", "    sock.settimeout(left)\n", "    sock.settimeout(None)\n"
    ),
    HandMutant(
        "worker",
        "control frames capped at 1 MiB",
        "max_header_bytes=1 << 16, max_frame_bytes=1 << 16",
        "max_header_bytes=1 << 20, max_frame_bytes=1 << 20",
    ),
    HandMutant(
        "gateway_audit",
        "row hash does not cover the previous hash",
        'message = prev_hash.encode("ascii") + b"\\n" + body.encode("ascii")',
        'message = body.encode("ascii")',
    ),
    HandMutant(
        "gateway_audit",
        "MAC compared with ==",
        "if not hmac.compare_digest(recomputed, row.row_hash):",
        "if recomputed != row.row_hash:",
    ),
    HandMutant(
        "gateway_audit", "status not covered", "request_id, decision, status]", "request_id, decision]"
    ),
    HandMutant(
        "gateway_keys",
        "token hash compared with ==",
        "if not hmac.compare_digest(given, stored) or",
        "if given != stored or",
    ),
    HandMutant(
        "gateway_keys",
        "token compared on a prefix",
        "if not hmac.compare_digest(given, stored) or",
        "if not hmac.compare_digest(given[:16], stored[:16]) or",
    ),
    HandMutant("gateway_keys", "revoked keys accepted", " or record.revoked is not None:", ":"),
    HandMutant(
        "integrity_compare",
        "digest compared on a prefix",
        "if want.digest != got.digest:",
        "if want.digest[:32] != (got.digest or '')[:32]:",
    ),
    HandMutant(
        "integrity_compare",
        "shard digest compared on a prefix",
        "if got_shards[(start, end)] != digest:",
        "if got_shards[(start, end)][:16] != digest[:16]:",
    ),
    HandMutant(
        "pickle_vm",
        "POP on an empty stack leaves the MARK",
        "        else:  # CPython: POP on an empty stack removes the topmost MARK\n            self._pop_mark(pos)\n",
        "        else:\n            pass\n",
    ),
    HandMutant(
        "pickle_vm",
        "MEMOIZE indexes by the highest key + 1",
        "self._memo[len(self._memo)] = self._top(pos)",
        "self._memo[max(self._memo, default=-1) + 1] = self._top(pos)",
    ),
    HandMutant(
        "pickle_vm",
        "PUT keeps the first value",
        "self._memo[arg] = self._top(pos)",
        "self._memo.setdefault(arg, self._top(pos))",
    ),
    HandMutant(
        "pickle_vm",
        "extension opcodes not reported",
        '        result.anomalies.append(("extension-code", pos, f"extension registry code {arg}"))\n',
        "",
    ),
    HandMutant(
        "pickle_vm",
        "planted __setstate__ not modelled",
        "                target.setstate = planted\n",
        "                pass\n",
    ),
    HandMutant(
        "pickle_vm",
        "limits checked every 65537 opcodes",
        "_CHECK_EVERY: Final = 65536",
        "_CHECK_EVERY: Final = 65537",
    ),
    HandMutant("pickle_vm", "BINGET handled as BINPUT", "0x68: Machine._op_get,", "0x68: Machine._op_put,"),
    HandMutant(
        "pickle_vm",
        "ADDITEMS handled as APPENDS",
        "0x90: Machine._op_additems,",
        "0x90: Machine._op_appends,",
    ),
    HandMutant(
        "pickle_vm",
        "Python 2 name mapping not applied",
        "if (module, name) in _compat_pickle.NAME_MAPPING:",
        "if False:",
    ),
    HandMutant(
        "pickle_findings",
        "append not a planted key",
        '"__setitem__", "append", "extend"',
        '"__setitem__", "extend"',
    ),
    HandMutant(
        "pickle_findings",
        "SETITEM on an imported object not a mutation",
        '{"append", "extend", "setitem", "add"}',
        '{"append", "extend", "add"}',
    ),
    HandMutant(
        "pickle_findings",
        "second pickle's error not numbered",
        'where = f"pickle #{index + 1}: " if index else ""',
        'where = ""',
    ),
    HandMutant(
        "pickle_findings", "setstate-injection rule dropped", "        if planted:\n", "        if False:\n"
    ),
    HandMutant(
        "pickle_findings",
        "extension-code finding dropped",
        'if kind == "extension-code":',
        'if kind == "extension":',
    ),
    HandMutant(
        "template",
        "cycler not treated as a Python object",
        'OBJECT_GLOBALS: Final = frozenset({"range", "namespace", "dict", "cycler", "joiner", "lipsum"})',
        'OBJECT_GLOBALS: Final = frozenset({"range", "namespace", "dict", "joiner", "lipsum"})',
    ),
    HandMutant(
        "template_fold",
        "~ not folded",
        '        return _bounded("".join(str(p) for p in parts))\n',
        "        return None\n",
    ),
    HandMutant("template", "mro not a Python internal", '"mro func_globals', '"func_globals'),
    HandMutant("template", "config not in the SSTI vocabulary", '"self config request', '"self request'),
    HandMutant("template", "pop among the safe methods", '"strip lstrip', '"pop strip lstrip'),
    HandMutant(
        "template", "selectattr's positional attribute not checked", '"selectattr": 0,', '"selectattr": None,'
    ),
    HandMutant(
        "template_cost_values",
        "steps limit off by one",
        "MAX_STEPS: Final = 100_000",
        "MAX_STEPS: Final = 100_001",
    ),
    HandMutant(
        "template_cost_base",
        "degree limit off by one",
        "len(total) - 1 > MAX_DEGREE",
        "len(total) - 1 > MAX_DEGREE + 1",
    ),
    HandMutant(
        "template_cost_stmts",
        "a loop's iterations do not multiply its body",
        "            pmul(ctx.m, factor),\n",
        "            ctx.m,\n",
    ),
    HandMutant(
        "template_cost_stmts",
        "every loop over data amortised",
        "factor = ONE if used else iterable.n",
        "factor = ONE if iterable.data else iterable.n",
    ),
    HandMutant(
        "template_cost_stmts",
        "amortisation not used up by the first loop",
        "(ctx.active - used) | {id(node)}",
        "ctx.active | {id(node)}",
    ),
    HandMutant(
        "template_cost_stmts",
        "recursive loops do not count the data below",
        "factor = padd(factor, D)",
        "factor = padd(factor, ZERO)",
    ),
    HandMutant(
        "template_cost_stmts",
        "growth never accelerating",
        "accelerating = any(_exceeds(",
        "accelerating = False and any(_exceeds(",
    ),
    HandMutant(
        "template_cost_flow",
        "numbers from data bounded by D",
        "return (_INF,) if v.data else v.n",
        "return v.n",
    ),
    HandMutant(
        "template_cost_calls",
        "two non-descending self-calls allowed",
        "lambda c: _progresses(c, depths)) > 1:",
        "lambda c: _progresses(c, depths)) > 2:",
    ),
    HandMutant(
        "template_cost_flow",
        "a container does not wrap its items a level up",
        "min(_depth(i, depths) for i in moving) - 1, -1)",
        "min(_depth(i, depths) for i in moving), -1)",
    ),
    HandMutant(
        "template_cost_calls",
        "mutual recursion judged as self-recursion",
        "if len(cycle) > 1:",
        "if len(cycle) > 2:",
    ),
    HandMutant(
        "template_cost_calls",
        "a non-descending chain costs D",
        "return D if strict else pscale(D, MAX_MACRO_DEPTH)",
        "return D",
    ),
    HandMutant(
        "template_fold", "fold bound off by one", "_MAX_FOLD: Final = 4096", "_MAX_FOLD: Final = 4097"
    ),
    HandMutant("template_fold", "join not a string-building filter", '"join format string', '"format string'),
    HandMutant("template_fold", "gi_frame not found inside a string", "|gi_frame|", "|"),
    HandMutant(
        "template_fold",
        "a slice bound from data folded as absent",
        "            if known and all(",
        "            if all(",
    ),
    HandMutant(
        "gateway_limiter",
        "an allowed request carries a wait",
        "    retry_after: float = 0.0\n",
        "    retry_after: float = 1.0\n",
    ),
    HandMutant(
        "gateway_limiter",
        "an allowed request names a budget",
        '    budget: str = ""\n',
        '    budget: str = "requests"\n',
    ),
    HandMutant(
        "gateway_app",
        "a 401 is not charged to the source address",
        '            state.preauth.failed(request.scope.get("client"))\n',
        "            pass\n",
    ),
    HandMutant(
        "gateway_app",
        "an unknown model name is labelled verbatim",
        'return name if state.config.model(name) is not None else ""',
        "return name",
    ),
    HandMutant(
        "gateway_guard", "duplicate Authorization headers accepted", '        b"authorization",\n', ""
    ),
    HandMutant(
        "gateway_guard",
        "header lines bounded at 1000",
        "HEADER_LINES: Final = 100",
        "HEADER_LINES: Final = 1000",
    ),
    HandMutant(
        "gateway_guard",
        "64 free small chunks become 4096",
        "CHUNK_GRACE: Final = 64",
        "CHUNK_GRACE: Final = 4096",
    ),
    HandMutant("gateway_tensors", "65 inputs accepted", "_MAX_INPUTS: Final = 64", "_MAX_INPUTS: Final = 65"),
    HandMutant(
        "gateway_tensors",
        "element bound 2**62",
        "_MAX_ELEMENTS: Final = 2**40",
        "_MAX_ELEMENTS: Final = 2**62",
    ),
    HandMutant(
        "collect",
        "findings beyond the cap do not weigh",
        "        for severity, count in self._dropped.items():",
        "        for severity, count in {}.items():",
    ),
)


def _pyproject(module: Module) -> str:
    base = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shared = base.get("tool", {}).get("mutmut", {})
    pytest_opts = base["tool"]["pytest"]["ini_options"]
    cfg = {
        **shared,
        "source_paths": ["src"],
        "only_mutate": [f"src/{module.source}"],
        "pytest_add_cli_args_test_selection": list(module.tests),
    }

    def value(v: object) -> str:
        return json.dumps(v)

    lines = ["[tool.mutmut]"] + [f"{k} = {value(v)}" for k, v in cfg.items()]
    lines += ["", "[tool.pytest.ini_options]"]
    lines += [f"{k} = {value(v)}" for k, v in pytest_opts.items()]
    return "\n".join(lines) + "\n"


def _prepare(name: str, module: Module) -> Path:
    where = WORK / name
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    shutil.copytree(ROOT / "src", where / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "tests", where / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (where / "pyproject.toml").write_text(_pyproject(module), encoding="utf-8")
    # mutmut copies src/ to mutants/src/ itself (skipping files already there, mtimes kept); made
    # here so that the PYTHONPATH entry for it exists when Python starts (a missing directory is
    # cached as "no finder" and the installed airlock would be imported instead)
    shutil.copytree(where / "src", where / "mutants" / "src")
    return where


def _mutmut(where: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # mutated code first, for pytest and for the subprocesses some tests start
    env["PYTHONPATH"] = str(where / "mutants" / "src")
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run(
        [str(exe), *args], cwd=where, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_module(name: str, jobs: int, timeout: float, rescore: bool = False) -> dict[str, object]:
    module = MODULES[name]
    if not (ROOT / "src" / module.source).is_file():
        return {"module": name, "error": f"src/{module.source} does not exist"}
    if rescore:
        # the last run's verdicts, scored again with the current EQUIVALENT (no mutant is re-run)
        where = WORK / name
        if not (where / "seconds.txt").is_file():
            return {"module": name, "error": f"no finished run in {where} to rescore"}
        seconds = float((where / "seconds.txt").read_text(encoding="utf-8"))
        proc = subprocess.CompletedProcess([], 0, "", "")
    else:
        where = _prepare(name, module)
        start = time.monotonic()
        proc = _mutmut(where, "run", "--max-children", str(jobs), timeout=timeout)
        seconds = time.monotonic() - start
        (where / "run.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
        if proc.returncode == 0:
            (where / "seconds.txt").write_text(str(seconds), encoding="utf-8")
    mutated = (where / "mutants" / "src" / module.source).read_text(encoding="utf-8")
    if proc.returncode != 0 and "__mutmut_" not in mutated:
        # only class bodies, Protocol stubs or import-time code: nothing mutmut 3 mutates
        return {"module": name, "source": f"src/{module.source}", "note": "no code mutmut can mutate"}
    if proc.returncode != 0:
        return {"module": name, "error": f"mutmut run exited {proc.returncode}; see {where}/run.log"}
    listing = _mutmut(where, "results", "--all", "true", timeout=600).stdout
    status: dict[str, str] = {}
    for line in listing.splitlines():
        match = re.match(r"\s*(\S+): (.+)$", line)
        if match:
            status[match[1]] = match[2].strip()
    survivors = sorted(k for k, v in status.items() if v in ("survived", "no tests", "suspicious"))
    equivalent = [k for k in survivors if k in EQUIVALENT]
    alive = [k for k in survivors if k not in EQUIVALENT]
    skipped = sum(1 for v in status.values() if v in ("skipped", "not checked"))
    considered = len(status) - skipped - len(equivalent)
    killed = considered - len(alive)
    diffs = [_mutmut(where, "show", k, timeout=120).stdout for k in alive]
    (where / "survivors.txt").write_text("\n".join(diffs), encoding="utf-8")
    return {
        "module": name,
        "source": f"src/{module.source}",
        "tests": list(module.tests),
        "mutants": len(status),
        "killed": killed,
        "equivalent": len(equivalent),
        "skipped": skipped,
        "survived": alive,
        "score": round(100.0 * killed / considered, 1) if considered else None,
        "seconds": round(seconds),
    }


def run_hand_mutants(names: list[str]) -> list[dict[str, object]]:
    """Apply each hand mutant of ``names`` alone to a scratch src/ and run the module's tests."""
    results: list[dict[str, object]] = []
    where = WORK / f"hand-{os.getpid()}"  # two runs at once must not share a scratch tree
    for mutant in (m for m in HAND_MUTANTS if m.module in names):
        module = MODULES[mutant.module]
        if where.exists():
            shutil.rmtree(where)
        shutil.copytree(
            ROOT / "src", where / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        target = where / "src" / module.source
        text = target.read_text(encoding="utf-8")
        if text.count(mutant.old) != 1:
            results.append(
                {
                    "module": mutant.module,
                    "what": mutant.what,
                    "status": "not applicable (text not found once)",
                }
            )
            continue
        target.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(where / "src"))
        tests = [str(ROOT / t) if t.startswith("tests/") else t for t in module.tests]
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=HAND_TIMEOUT, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            # the mutant made the tests hang (a socket without its deadline): caught, like mutmut's timeouts
            results.append({"module": mutant.module, "what": mutant.what, "status": "killed (tests hung)"})
            continue
        if proc.returncode == 1:
            status = "killed"
        elif proc.returncode == 0:
            status = "survived"
        else:
            status = f"error rc={proc.returncode}"
        results.append({"module": mutant.module, "what": mutant.what, "status": status})
    if where.exists():
        shutil.rmtree(where)
    return results


def _row(result: dict[str, object]) -> str:
    if "error" in result:
        return f"| {result['module']} | error: {result['error']} | | | | |"
    if "note" in result:
        return (
            f"| {result['module']} | `{result['source']}` | n/a | {result['note']} (hand mutants only) | | |"
        )
    survived = result["survived"]
    assert isinstance(survived, list)
    return (
        f"| {result['module']} | `{result['source']}` | {result['score']}% | {result['killed']} / "
        f"{result['mutants']} ({result['equivalent']} equivalent) | {len(survived)} | {result['seconds']} s |"
    )


def _update_doc(results: list[dict[str, object]], hand: list[dict[str, object]]) -> None:
    text = DOC.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    table, _, tail = rest.partition(END)
    rows = {
        line.split("|")[1].strip(): line
        for line in table.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    rows.pop("module", None)
    for result in results:
        rows[str(result["module"])] = _row(result)
    order = [m for m in MODULES if m in rows]
    body = [
        "| module | source | score | killed / mutants | surviving | time |",
        "|---|---|---|---|---|---|",
        *(rows[m] for m in order),
    ]
    DOC.write_text(head + BEGIN + "\n" + "\n".join(body) + "\n" + END + tail, encoding="utf-8")
    if hand:
        lines = [f"| {h['module']} | {h['what']} | {h['status']} |" for h in hand]
        text = DOC.read_text(encoding="utf-8")
        head, _, rest = text.partition(HAND_BEGIN)
        old, _, tail = rest.partition(HAND_END)
        keep = [
            line
            for line in old.splitlines()
            if line.startswith("| ")
            and "---" not in line
            and line.split("|")[1].strip() not in {str(h["module"]) for h in hand}
        ]
        keep = [line for line in keep if line.split("|")[1].strip() != "module"]
        body = ["| module | injected bug | result |", "|---|---|---|", *keep, *lines]
        DOC.write_text(head + HAND_BEGIN + "\n" + "\n".join(body) + "\n" + HAND_END + tail, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("modules", nargs="*", help="module names from the table (--list)")
    parser.add_argument("--all", action="store_true", help="every module in the table")
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    parser.add_argument("--jobs", type=int, default=1, help="mutmut --max-children (default 1)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per module (default 3600)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/mutation.md")
    parser.add_argument(
        "--hand-only", action="store_true", help="only the hand mutants (seconds, not minutes)"
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the last run of each module again with the current EQUIVALENT (runs nothing)",
    )
    args = parser.parse_args()
    if args.list:
        for name, module in MODULES.items():
            print(f"{name:20} src/{module.source:40} {' '.join(module.tests)}")
        return 0
    names = list(MODULES) if args.all else args.modules
    unknown = [n for n in names if n not in MODULES]
    if unknown or not names:
        parser.error(f"unknown or no module(s): {' '.join(unknown)}; see --list")
    results = []
    hand = [] if args.rescore else run_hand_mutants(names)
    for item in hand:
        print(f"hand mutant [{item['module']}] {item['what']}: {item['status']}")
    for name in [] if args.hand_only else names:
        result = run_module(name, args.jobs, args.timeout, args.rescore)
        results.append(result)
        print(json.dumps(result, indent=2))
        survivors = WORK / name / "survivors.txt"
        if survivors.is_file() and survivors.stat().st_size:
            print(survivors.read_text(encoding="utf-8"))
    (WORK / "last.json").write_text(json.dumps({"mutmut": results, "hand": hand}, indent=2), encoding="utf-8")
    if not args.no_doc:
        _update_doc(results, hand)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
