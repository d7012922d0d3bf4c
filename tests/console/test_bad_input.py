"""Bad input to every command: exactly one line on stderr (``qdeck: ...``), exit 2, no traceback, no password.

One table of cases. Each runs ``console.cli.main()`` in this process (sys.argv patched, stdout and stderr captured
at the file descriptors, 80 columns so that a wrapped line shows), which is what the ``qdeck`` script runs; a few
run again as real subprocesses to prove the two agree. No case needs a broker: the few that are about an
unreachable broker point at 127.0.0.1 port 1, where nothing listens.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from console.cli import main
from tests.cli import Run, qdeck

PASSWORD = "s3cr3tPW"
NOWHERE = "/nonexistent/qdeck-brokers.toml"
MEM = ("-b", "memory://badinput")  # the in-process fake: a case that wrongly gets past validation runs briefly
RUN = ("load", "run", *MEM, "-q", "q")
RUN_OK = (*RUN, "--rate", "10", "--duration", "1s")
UNREACHABLE_AMQP = f"amqp://u:{PASSWORD}@127.0.0.1:1/?management_url=http://127.0.0.1:1"
UNREACHABLE_REDIS = f"redis://u:{PASSWORD}@127.0.0.1:1/0"

GOOD_PLAN = 'queue = "q"\nduration = "1s"\n\n[schedule]\nkind = "constant"\nrate = 10\n'
PROFILE = '[brokers.local]\nurl = "redis://127.0.0.1:1/0"\n'

TEXT_FILES: dict[str, str] = {
    # plans
    "plan_slos.toml": GOOD_PLAN + '\n[slos]\np99 = "<250ms"\n',
    "plan_duraton.toml": 'queue = "q"\nduraton = "1s"\n[schedule]\nrate = 10\n',
    "plan_timout.toml": GOOD_PLAN.replace('duration = "1s"', 'duration = "1s"\ntimout = "5s"'),
    "plan_sched_key.toml": GOOD_PLAN + "rat = 5\n",
    "plan_payload_key.toml": GOOD_PLAN + "\n[payload]\nsise = 5\n",
    "plan_slo_metric.toml": GOOD_PLAN + '\n[slo]\np99x = "<1s"\n',
    "plan_slo_value.toml": GOOD_PLAN + "\n[slo]\np99 = 250\n",
    "plan_slo_bad.toml": GOOD_PLAN + '\n[slo]\np99 = "250ms"\n',
    "plan_rate_str.toml": GOOD_PLAN.replace("rate = 10", 'rate = "abc"'),
    "plan_rate_bool.toml": GOOD_PLAN.replace("rate = 10", "rate = true"),
    "plan_rate_neg.toml": GOOD_PLAN.replace("rate = 10", "rate = -10"),
    "plan_rate_nan.toml": GOOD_PLAN.replace("rate = 10", "rate = nan"),
    "plan_rate_inf.toml": GOOD_PLAN.replace("rate = 10", "rate = inf"),
    "plan_duration_bool.toml": GOOD_PLAN.replace('duration = "1s"', "duration = true"),
    "plan_duration_text.toml": GOOD_PLAN.replace('duration = "1s"', 'duration = "soon"'),
    "plan_duration_huge.toml": GOOD_PLAN.replace('duration = "1s"', 'duration = "1e400s"'),
    "plan_requests_str.toml": GOOD_PLAN.replace('duration = "1s"', 'requests = "many"'),
    "plan_requests_float.toml": GOOD_PLAN.replace('duration = "1s"', "requests = 1.5"),
    "plan_queue_int.toml": GOOD_PLAN.replace('queue = "q"', "queue = 5"),
    "plan_queue_empty.toml": GOOD_PLAN.replace('queue = "q"', 'queue = ""'),
    "plan_seed_float.toml": GOOD_PLAN.replace("[schedule]", "seed = 1.5\n\n[schedule]"),
    "plan_schedule_str.toml": 'queue = "q"\nduration = "1s"\nrate = 10\nschedule = "poisson"\n',
    "plan_payload_int.toml": GOOD_PLAN.replace("[schedule]", "payload = 3\n\n[schedule]"),
    "plan_slo_str.toml": GOOD_PLAN.replace("[schedule]", 'slo = "p99<1s"\n\n[schedule]'),
    "plan_kind_bogus.toml": GOOD_PLAN.replace('"constant"', '"bogus"'),
    "plan_kind_int.toml": GOOD_PLAN.replace('"constant"', "5"),
    "plan_steps_int.toml": 'queue = "q"\n[schedule]\nkind = "steps"\nsteps = 5\n',
    "plan_steps_bad.toml": 'queue = "q"\n[schedule]\nkind = "steps"\nsteps = ["abc"]\n',
    "plan_file_int.toml": 'queue = "q"\n[schedule]\nkind = "trace"\nfile = 5\n',
    "plan_concurrency_str.toml": 'queue = "q"\nrequests = 5\n[schedule]\nkind = "closed"\nconcurrency = "x"\n',
    "plan_from_str.toml": 'queue = "q"\nduration = "1s"\n[schedule]\nkind = "ramp"\nfrom = "x"\nto = 5\nover = "1s"\n',
    "plan_size_neg.toml": GOOD_PLAN + "\n[payload]\nsize = -1\n",
    "plan_text_int.toml": GOOD_PLAN + "\n[payload]\ntext = 5\n",
    "plan_no_queue.toml": 'duration = "1s"\n[schedule]\nrate = 10\n',
    "plan_invalid.toml": 'queue = "q\nrate = \n',
    "plan_empty.toml": "",
    "plan_max_outage.toml": GOOD_PLAN.replace("[schedule]", "max_outage = [1]\n\n[schedule]"),
    "plan_broker_int.toml": GOOD_PLAN.replace("[schedule]", "broker = 5\n\n[schedule]"),
    "plan_llm_objective.toml": GOOD_PLAN.replace("[schedule]", 'objective = ["ttft<1s"]\n\n[schedule]'),
    "plan_llm_tokens_bool.toml": GOOD_PLAN.replace("[schedule]", "input_tokens = true\n\n[schedule]"),
    "plan_llm_gamma.toml": GOOD_PLAN.replace("[schedule]", 'output_tokens = "gamma:1,2"\n\n[schedule]'),
    "plan_llm_objectives_str.toml": GOOD_PLAN.replace("[schedule]", 'objectives = "ttft<1s"\n\n[schedule]'),
    "plan_llm_objective_bad.toml": GOOD_PLAN.replace("[schedule]", 'objectives = ["ttft>1s"]\n\n[schedule]'),
    "plan_llm_both.toml": GOOD_PLAN.replace("[schedule]", 'dataset = "x.jsonl"\ninput_tokens = 5\n\n[schedule]'),
    "plan_llm_no_dataset.toml": GOOD_PLAN.replace("[schedule]", 'dataset = "/nonexistent/x.jsonl"\n\n[schedule]'),
    "plan_llm_cap_alone.toml": GOOD_PLAN.replace("[schedule]", "max_tokens = 8\n\n[schedule]"),
    "plan_llm_ok.toml": GOOD_PLAN.replace("[schedule]", 'output_tokens = 8\n\n[schedule]'),
    # datasets of token lengths (--dataset)
    "ds_ok.jsonl": '{"input_tokens": 5, "output_tokens": 6}\n',
    "ds_empty.jsonl": "",
    "ds_header.csv": "input_tokens,output_tokens\n",
    "ds_nocol.csv": "prompt,reply\n1,2\n",
    "ds_word.csv": "input_tokens,output_tokens\n1,2\n3,abc\n",
    "ds_zero.jsonl": '{"input_tokens": 1, "output_tokens": 1}\n{"input_tokens": 0, "output_tokens": 1}\n',
    "ds_negative.tsv": "prompt_len\toutput_len\n-3\t4\n",
    "ds_huge.csv": "prompt_tokens,completion_tokens\n1,1000001\n",
    "ds_notjson.jsonl": '{"input_tokens": 1,\n',
    "ds_sharegpt_short.json": '[{"conversations": [{"from": "human", "value": "hi"}]}]',
    "ds_sharegpt_bad.json": '[\n{"conversations": "hi"}\n]',
    "ds_bigint.jsonl": '{"input_tokens": 1%s, "output_tokens": 5}\n' % ("0" * 400),
    "ds_deep.jsonl": '{"input_tokens": 1, "output_tokens": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n",
    "ds_deep_sharegpt.json": "[" + "[" * 100_000 + "]" * 100_000 + "]",
    # traces
    "trace_nocol.csv": "when\n1\n",
    "trace_word.csv": "offset_ms\nabc\n",
    "trace_neg.csv": "offset_ms\n-5\n",
    "trace_huge.csv": "offset_ms\n1e308\n",
    "trace_inf.csv": "offset_ms\ninf\n",
    "trace_nan.csv": "offset_ms\nnan\n",
    "trace_week.csv": "offset_s\n1000000\n",
    "trace_empty.csv": "",
    "trace_header.csv": "offset_ms\n",
    "trace_size_word.csv": "offset_ms,payload_bytes\n1,abc\n",
    "trace_size_neg.csv": "offset_ms,payload_bytes\n1,-4\n",
    "trace_size_huge.csv": "offset_ms,payload_bytes\n1,999999999999\n",
    # profile files
    "prof_broken.toml": "[brokers\n",
    "prof_defualt.toml": 'defualt = "local"\n' + PROFILE,
    "prof_broker.toml": '[broker.local]\nurl = "redis://127.0.0.1:1/0"\n',
    "prof_notable.toml": 'brokers = "local"\n',
    "prof_nourl.toml": '[brokers.local]\ndescription = "no url"\n',
    "prof_urlint.toml": "[brokers.local]\nurl = 5\n",
    "prof_envunset.toml": '[brokers.local]\nurl = "amqp://u@127.0.0.1:1/"\npassword_env = "QDECK_BADINPUT_UNSET"\n',
    "prof_envint.toml": '[brokers.local]\nurl = "amqp://u@127.0.0.1:1/"\npassword_env = 5\n',
    "prof_desc_int.toml": PROFILE + "description = 5\n",
    "prof_badurl.toml": f'[brokers.local]\nurl = "redis://u:{PASSWORD}@127.0.0.1:99999/0"\n',
    "prof_scheme.toml": f'[brokers.local]\nurl = "ftp://u:{PASSWORD}@127.0.0.1/"\n',
    "prof_default_missing.toml": 'default = "nope"\n' + PROFILE,
    "prof_default_int.toml": "default = 5\n" + PROFILE,
    "prof_extra_table.toml": PROFILE + "[brokers.local.tls]\nca = \"x\"\n",
    "prof_ok.toml": PROFILE,
    "prof_entry_str.toml": 'brokers = { local = "redis://127.0.0.1:1/0" }\n',
    # summaries
    "sum_notjson.json": "this is not JSON {",
    "sum_list.json": "[1, 2, 3]",
    "sum_empty.json": "",
    "sum_noversion.json": '{"counts": {}}',
    "sum_v99.json": '{"schema_version": 99, "counts": {}, "stages": {}, "rates": {}}',
    "sum_nocounts.json": '{"schema_version": 1, "stages": {}, "rates": {}}',
    "sum_string.json": '"a summary"',
}
BINARY_FILES: dict[str, bytes] = {
    "plan_binary.toml": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xfd",
    "plan_latin1.toml": 'queue = "caf\xe9"\n'.encode("latin-1"),
    "trace_latin1.csv": b"offset_ms\n1\n\xff\xfe\n",
    "trace_binary.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xfd",
    "prof_binary.toml": b"\x00\x01\x02\xff\xfe binary",
    "sum_binary.json": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\xfd",
    "ds_latin1.csv": b"input_tokens,output_tokens\n1,2\ncaf\xe9,3\n",
}


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expect: str = ""  # a substring of the error line (case-insensitive), when it matters which error it is
    config: str | None = None  # a profile file of the fixtures as $QDECK_CONFIG
    env: dict[str, str] = field(default_factory=dict)


def c(id_: str, *args: str, expect: str = "", config: str | None = None, env: dict[str, str] | None = None) -> Any:
    return pytest.param(Case(tuple(args), expect, config, env or {}), id=id_)


def _url_cases() -> list[object]:
    urls = {
        "scheme": ("ftp://host/", "unknown scheme"),
        "no-scheme-like": ("://host", "unknown scheme"),
        "no-host": ("amqp://", "no host"),
        "empty-host": ("redis://:6379/0", "empty host"),
        "port-big": ("redis://127.0.0.1:99999/0", "port"),
        "port-word": ("redis://127.0.0.1:abc/0", "port"),
        "port-zero": ("amqp://127.0.0.1:0/", "port"),
        "redis-db": ("redis://127.0.0.1/notanumber", "database"),
        "two-hosts": ("amqp://h1,h2/", "several hosts"),
        "ipv6": ("kafka://[::1", "malformed"),
        "query": ("kafka://h:9092?x", "query"),
        "pw-scheme": (f"ftp://u:{PASSWORD}@host/", "unknown scheme"),
        "pw-port": (f"amqp://u:{PASSWORD}@127.0.0.1:70000/", "port"),
        "pw-redis-db": (f"redis://:{PASSWORD}@127.0.0.1/x", "database"),
        "pw-query": (f"kafka://u:{PASSWORD}@h:9092?sasl_password={PASSWORD}&x", "query"),
    }
    commands = {
        "queues": ("queues",),
        "lag": ("lag", "-i", "0"),
        "dlq-list": ("dlq", "list"),
        "dlq-peek": ("dlq", "peek", "Q"),
        "consumers": ("consumers",),
        "console": ("console",),
        "worker": ("worker", "-q", "q"),
        "load-run": ("load", "run", "-q", "q", "--rate", "10", "--duration", "1s"),
        "load-agent": ("load", "agent", "--master", "127.0.0.1:1"),
    }
    cases = []
    for name, (url, expect) in urls.items():
        for cmd_name, cmd in commands.items():
            if name.startswith("pw-") or cmd_name in ("queues", "load-run"):
                cases.append(c(f"url-{name}-{cmd_name}", *cmd, "-b", url, expect=expect))
    return cases


CASES = [
    # --- usage errors: commands, options, choices, ranges -------------------------------------------------------
    c("no-such-command", "bogus", expect="no such command"),
    c("no-such-subcommand-dlq", "dlq", "bogus", expect="no such command"),
    c("no-such-subcommand-load", "load", "bogus", expect="no such command"),
    c("no-such-option", "queues", "--bogus", expect="no such option"),
    c("no-such-option-typo", *RUN_OK, "--rat", "5", expect="no such option"),
    c("option-needs-value", "queues", "-b", expect="requires an argument"),
    c("extra-argument", "queues", "extra", expect="unexpected extra argument"),
    c("dlq-peek-n-negative", "dlq", "peek", "Q", "-n", "-1", *MEM, expect="--count"),
    c("dlq-peek-n-zero", "dlq", "peek", "Q", "-n", "0", *MEM, expect="--count"),
    c("dlq-peek-n-big", "dlq", "peek", "Q", "-n", "10001", *MEM, expect="--count"),
    c("dlq-peek-n-word", "dlq", "peek", "Q", "-n", "abc", *MEM, expect="--count"),
    c("dlq-peek-body-bytes", "dlq", "peek", "Q", "--body-bytes", "-1", *MEM, expect="--body-bytes"),
    c("dlq-peek-empty-queue", "dlq", "peek", "", *MEM, expect="empty"),
    c("dlq-peek-blank-queue", "dlq", "peek", "  ", *MEM, expect="empty"),
    c("dlq-peek-no-queue", "dlq", "peek", *MEM, expect="missing argument"),
    c("dlq-list-bogus", "dlq", "list", "--bogus", expect="no such option"),
    c("queues-watch-zero", "queues", "--watch", "0", *MEM, expect="--watch"),
    c("queues-watch-negative", "queues", "--watch", "-1", *MEM, expect="--watch"),
    c("queues-watch-nan", "queues", "--watch", "nan", *MEM, expect="--watch"),
    c("queues-watch-inf", "queues", "--watch", "inf", *MEM, expect="--watch"),
    c("queues-watch-word", "queues", "--watch", "abc", *MEM, expect="--watch"),
    c("queues-sort-bogus", "queues", "--sort", "bogus", *MEM, expect="--sort"),
    c("queues-sort-empty", "queues", "--sort", "", *MEM, expect="--sort"),
    c("queues-filter-no-value", "queues", *MEM, "--filter", expect="requires an argument"),
    c("lag-interval-negative", "lag", "--interval", "-1", *MEM, expect="--interval"),
    c("lag-interval-nan", "lag", "--interval", "nan", *MEM, expect="--interval"),
    c("lag-interval-inf", "lag", "--interval", "inf", *MEM, expect="--interval"),
    c("lag-interval-past-limit", "lag", "--interval", "7200", *MEM, expect="--interval"),
    c("queues-watch-past-limit", "queues", "--watch", "1e9", *MEM, expect="--watch"),
    c("lag-interval-word", "lag", "--interval", "abc", *MEM, expect="--interval"),
    c("consumers-bogus", "consumers", "--bogus", expect="no such option"),
    c("consumers-two-queues", "consumers", "a", "b", *MEM, expect="unexpected extra argument"),
    c("console-interval-zero", "console", "--interval", "0", *MEM, expect="--interval"),
    c("console-interval-nan", "console", "--interval", "nan", *MEM, expect="--interval"),
    c("console-interval-inf", "console", "--interval", "inf", *MEM, expect="--interval"),
    c("console-same-broker-twice", "console", *MEM, *MEM, expect="twice"),
    c("brokers-bogus", "brokers", "--bogus", expect="no such option"),
    # --- the worker --------------------------------------------------------------------------------------------
    c("worker-queue-empty", "worker", *MEM, "-q", "", expect="empty"),
    c("worker-queue-blank", "worker", *MEM, "-q", "   ", expect="empty"),
    c("worker-queue-missing", "worker", *MEM, expect="--queue"),
    c("worker-group-empty", "worker", *MEM, "-q", "q", "--group", "", expect="group"),
    c("worker-dead-letter-empty", "worker", *MEM, "-q", "q", "--dead-letter", "", expect="dead-letter"),
    c("worker-model-unknown", "worker", *MEM, "-q", "q", "--model", "bogus", expect="unknown model"),
    c("worker-model-empty", "worker", *MEM, "-q", "q", "--model", "", expect="model"),
    c("worker-model-param-word", "worker", *MEM, "-q", "q", "--model", "synthetic:base_ms=abc", expect="base_ms"),
    c("worker-model-param-unknown", "worker", *MEM, "-q", "q", "--model", "synthetic:nokey=1", expect="nokey"),
    c("worker-model-param-form", "worker", *MEM, "-q", "q", "--model", "synthetic:junk", expect="key=value"),
    c("worker-model-jitter", "worker", *MEM, "-q", "q", "--model", "synthetic:jitter=weird", expect="jitter"),
    c("worker-model-negative", "worker", *MEM, "-q", "q", "--model", "synthetic:base_ms=-1", expect="negative"),
    c("worker-model-nan", "worker", *MEM, "-q", "q", "--model", "synthetic:base_ms=nan", expect="base_ms"),
    c("worker-model-no-module", "worker", *MEM, "-q", "q", "--model", "no_such_module_xyz:fn", expect="import"),
    c("worker-model-no-attr", "worker", *MEM, "-q", "q", "--model", "os:no_such_attr", expect="no attribute"),
    c("worker-model-not-callable", "worker", *MEM, "-q", "q", "--model", "os:sep", expect="not callable"),
    c("worker-max-batch-zero", "worker", *MEM, "-q", "q", "--max-batch", "0", expect="--max-batch"),
    c("worker-max-batch-negative", "worker", *MEM, "-q", "q", "--max-batch", "-1", expect="--max-batch"),
    c("worker-max-batch-word", "worker", *MEM, "-q", "q", "--max-batch", "abc", expect="--max-batch"),
    c("worker-max-wait-negative", "worker", *MEM, "-q", "q", "--max-wait-ms", "-1", expect="--max-wait-ms"),
    c("worker-max-wait-nan", "worker", *MEM, "-q", "q", "--max-wait-ms", "nan", expect="--max-wait-ms"),
    c("worker-max-wait-inf", "worker", *MEM, "-q", "q", "--max-wait-ms", "inf", expect="--max-wait-ms"),
    c("worker-concurrency-zero", "worker", *MEM, "-q", "q", "--concurrency", "0", expect="--concurrency"),
    c("worker-max-attempts-zero", "worker", *MEM, "-q", "q", "--max-attempts", "0", expect="--max-attempts"),
    c("worker-device", "worker", *MEM, "-q", "q", "--device", "tpu", expect="--device"),
    c("worker-claim-idle-zero", "worker", *MEM, "-q", "q", "--claim-idle", "0", expect="--claim-idle"),
    c("worker-claim-idle-nan", "worker", *MEM, "-q", "q", "--claim-idle", "nan", expect="--claim-idle"),
    c("worker-metrics-interval-zero", "worker", *MEM, "-q", "q", "--metrics-interval", "0",
      expect="--metrics-interval"),
    c("worker-metrics-interval-nan", "worker", *MEM, "-q", "q", "--metrics-interval", "nan",
      expect="--metrics-interval"),
    c("worker-metrics-interval-inf", "worker", *MEM, "-q", "q", "--metrics-interval", "inf",
      expect="--metrics-interval"),
    c("worker-claim-idle-inf", "worker", *MEM, "-q", "q", "--claim-idle", "inf", expect="--claim-idle"),
    c("worker-max-wait-past-limit", "worker", *MEM, "-q", "q", "--max-wait-ms", "1e7", expect="--max-wait-ms"),
    c("worker-model-huge", "worker", *MEM, "-q", "q", "--model", "synthetic:base_ms=1e300", expect="base_ms"),
    c("worker-metrics-format", "worker", *MEM, "-q", "q", "--metrics-format", "xml", expect="--metrics-format"),
    c("worker-memory-broker", "worker", *MEM, "-q", "q", expect="memory"),
    # --- load run: queue, rates, durations, schedules -------------------------------------------------------------
    c("run-no-queue", "load", "run", *MEM, "--rate", "10", "--duration", "1s", expect="queue"),
    c("run-queue-empty", "load", "run", *MEM, "-q", "", "--rate", "10", "--duration", "1s", expect="queue"),
    c("run-queue-blank", "load", "run", *MEM, "-q", "  ", "--rate", "10", "--duration", "1s", expect="queue"),
    c("run-no-rate", *RUN, "--duration", "1s", expect="--rate"),
    c("run-no-duration", *RUN, "--rate", "10", expect="--duration"),
    c("run-rate-negative", *RUN, "--rate", "-1", "--duration", "1s", expect="rate"),
    c("run-rate-zero", *RUN, "--rate", "0", "--duration", "1s", expect="rate"),
    c("run-rate-nan", *RUN, "--rate", "nan", "--duration", "1s", expect="rate"),
    c("run-rate-inf", *RUN, "--rate", "inf", "--duration", "1s", expect="rate"),
    c("run-rate-minus-inf", *RUN, "--rate", "-inf", "--duration", "1s", expect="rate"),
    c("run-rate-word", *RUN, "--rate", "abc", "--duration", "1s", expect="--rate"),
    c("run-rate-1e12", *RUN, "--rate", "1e12", "--duration", "1s", expect="rate"),
    c("run-rate-past-one-generator", *RUN, "--rate", "300000", "--duration", "1s", expect="--agents"),
    c("run-rate-past-one-agent", *RUN, "--rate", "300000", "--duration", "1s", "--agents", "1",
      "--agents-wait", "1s", expect="--agents"),
    c("run-rate-past-two-agents", *RUN, "--rate", "900000", "--duration", "1s", "--agents", "2",
      "--agents-wait", "1s", expect="--agents"),
    c("run-rate-1e12-agents", *RUN, "--rate", "1e12", "--duration", "1s", "--agents", "2", "--agents-wait", "1s",
      expect="rate"),
    c("run-poisson-past-one-generator", *RUN, "--schedule", "poisson", "--rate", "250000", "--duration", "1s",
      expect="--agents"),
    c("run-poisson-rate-negative", *RUN, "--schedule", "poisson", "--rate", "-5", "--duration", "1s",
      expect="rate"),
    c("run-duration-word", *RUN, "--rate", "10", "--duration", "abc", expect="duration"),
    c("run-duration-negative", *RUN, "--rate", "10", "--duration", "-1s", expect="duration"),
    c("run-duration-zero", *RUN, "--rate", "10", "--duration", "0", expect="duration"),
    c("run-duration-1e400", *RUN, "--rate", "10", "--duration", "1e400s", expect="duration"),
    c("run-duration-unit", *RUN, "--rate", "10", "--duration", "10y", expect="unit"),
    c("run-duration-empty", *RUN, "--rate", "10", "--duration", "", expect="duration"),
    c("run-duration-past-a-week", *RUN, "--rate", "10", "--duration", "200h", expect="duration"),
    c("run-requests-zero", *RUN, "--rate", "10", "--requests", "0", expect="--requests"),
    c("run-requests-negative", *RUN, "--rate", "10", "--requests", "-5", expect="--requests"),
    c("run-requests-word", *RUN, "--rate", "10", "--requests", "many", expect="--requests"),
    c("run-warmup-word", *RUN_OK, "--warmup", "abc", expect="warm"),
    c("run-warmup-1e400", *RUN_OK, "--warmup", "1e400s", expect="warm"),
    c("run-timeout-zero", *RUN_OK, "--timeout", "0", expect="timeout"),
    c("run-timeout-two-hours", *RUN_OK, "--timeout", "2h", expect="timeout"),
    c("run-timeout-word", *RUN_OK, "--timeout", "abc", expect="timeout"),
    c("run-coalesce-big", *RUN_OK, "--coalesce", "1s", expect="coalesc"),
    c("run-coalesce-word", *RUN_OK, "--coalesce", "abc", expect="coalesc"),
    c("run-max-outage-word", *RUN_OK, "--max-outage", "abc", expect="--max-outage"),
    c("run-max-outage-1e400", *RUN_OK, "--max-outage", "1e400s", expect="outage"),
    c("run-payload-size-negative", *RUN_OK, "--payload-size", "-1", expect="--payload-size"),
    c("run-payload-size-huge", *RUN_OK, "--payload-size", "999999999999", expect="payload"),
    c("run-seed-word", *RUN_OK, "--seed", "abc", expect="--seed"),
    c("run-schedule-bogus", *RUN_OK, "--schedule", "bogus", expect="--schedule"),
    c("run-ramp-no-over", *RUN, "--schedule", "ramp", "--ramp-to", "10", "--duration", "1s", expect="--ramp-over"),
    c("run-ramp-over-word", *RUN, "--schedule", "ramp", "--ramp-to", "10", "--ramp-over", "abc",
      "--duration", "1s", expect="duration"),
    c("run-ramp-to-nan", *RUN, "--schedule", "ramp", "--ramp-to", "nan", "--ramp-over", "1s", "--duration", "1s",
      expect="--ramp-to"),
    c("run-ramp-from-negative", *RUN, "--schedule", "ramp", "--ramp-from", "-1", "--ramp-to", "10",
      "--ramp-over", "1s", "--duration", "1s", expect="ramp"),
    c("run-ramp-past-one-generator", *RUN, "--schedule", "ramp", "--ramp-to", "1e6", "--ramp-over", "1s",
      "--duration", "1s", expect="--agents"),
    c("run-steps-missing", *RUN, "--schedule", "steps", expect="--steps"),
    c("run-steps-word", *RUN, "--schedule", "steps", "--steps", "abc", expect="step"),
    c("run-steps-duration-word", *RUN, "--schedule", "steps", "--steps", "10:abc", expect="step"),
    c("run-steps-rate-zero", *RUN, "--schedule", "steps", "--steps", "0:1s", expect="step"),
    c("run-steps-time-zero", *RUN, "--schedule", "steps", "--steps", "10:0s", expect="step"),
    c("run-steps-empty", *RUN, "--schedule", "steps", "--steps", "", expect="steps"),
    c("run-steps-1e12", *RUN, "--schedule", "steps", "--steps", "1e12:1s", expect="rate"),
    c("run-steps-1e400s", *RUN, "--schedule", "steps", "--steps", "10:1e400s", expect="step"),
    c("run-steps-past-one-generator", *RUN, "--schedule", "steps", "--steps", "10:1s,500000:1s",
      expect="--agents"),
    c("run-closed-no-concurrency", *RUN, "--schedule", "closed", "--requests", "5", expect="--concurrency"),
    c("run-closed-concurrency-zero", *RUN, "--schedule", "closed", "--concurrency", "0", "--requests", "5",
      expect="--concurrency"),
    c("run-agents-zero", *RUN_OK, "--agents", "0", expect="--agents"),
    c("run-agents-wait-word", *RUN_OK, "--agents", "1", "--agents-wait", "abc", expect="--agents-wait"),
    c("run-agents-wait-1e400", *RUN_OK, "--agents", "1", "--agents-wait", "1e400s", expect="--agents-wait"),
    c("run-bind-bad", *RUN_OK, "--agents", "1", "--agents-wait", "1s", "--bind", "nonsense", expect="--bind"),
    c("run-bind-port", *RUN_OK, "--agents", "1", "--agents-wait", "1s", "--bind", "*:99999", expect="--bind"),
    c("agent-master-bad", "load", "agent", "--master", "nonsense", *MEM, expect="--master"),
    c("agent-master-port", "load", "agent", "--master", "h:0", *MEM, expect="--master"),
    c("agent-master-missing", "load", "agent", *MEM, expect="--master"),
    # --- SLOs --------------------------------------------------------------------------------------------------
    c("slo-no-op", *RUN_OK, "--slo", "p99", expect="slo"),
    c("slo-no-value", *RUN_OK, "--slo", "p99<", expect="slo"),
    c("slo-no-unit", *RUN_OK, "--slo", "p99<5", expect="unit"),
    c("slo-errors-unit", *RUN_OK, "--slo", "errors<5ms", expect="errors"),
    c("slo-percentile", *RUN_OK, "--slo", "p101<1ms", expect="percentile"),
    c("slo-stage", *RUN_OK, "--slo", "nonsense.p99<1ms", expect="stage"),
    c("slo-operator", *RUN_OK, "--slo", "p99~5ms", expect="slo"),
    c("slo-empty", *RUN_OK, "--slo", "", expect="slo"),
    c("slo-metric", *RUN_OK, "--slo", "latency<5ms", expect="metric"),
    c("slo-number", *RUN_OK, "--slo", "p99<1.2.3ms", expect="slo"),
    c("slo-infinite", *RUN_OK, "--slo", "p99<1e400ms", expect="finite"),
    c("slo-negative-share", *RUN_OK, "--slo", "errors<-1%", expect="slo"),
    c("slo-infinite-count", *RUN_OK, "--slo", "errors<1e400", expect="finite"),
    c("slo-infinite-rate", *RUN_OK, "--slo", "achieved_rate>=1e400%", expect="finite"),
    c("slo-share-above-100", *RUN_OK, "--slo", "timeouts<150%", expect="at most 100%"),
    # --- plan files --------------------------------------------------------------------------------------------
    c("plan-slos", "load", "run", *MEM, "--plan", "{F}/plan_slos.toml",
      expect="plan_slos.toml: unknown key 'slos' (did you mean 'slo'?)"),
    c("plan-duraton", "load", "run", *MEM, "--plan", "{F}/plan_duraton.toml", expect="did you mean 'duration'"),
    c("plan-timout", "load", "run", *MEM, "--plan", "{F}/plan_timout.toml", expect="did you mean 'timeout'"),
    c("plan-schedule-key", "load", "run", *MEM, "--plan", "{F}/plan_sched_key.toml", expect="did you mean 'rate'"),
    c("plan-payload-key", "load", "run", *MEM, "--plan", "{F}/plan_payload_key.toml", expect="did you mean 'size'"),
    c("plan-slo-metric", "load", "run", *MEM, "--plan", "{F}/plan_slo_metric.toml", expect="plan_slo_metric.toml"),
    c("plan-slo-value-int", "load", "run", *MEM, "--plan", "{F}/plan_slo_value.toml", expect="plan_slo_value.toml"),
    c("plan-slo-value-no-op", "load", "run", *MEM, "--plan", "{F}/plan_slo_bad.toml", expect="plan_slo_bad.toml"),
    c("plan-rate-str", "load", "run", *MEM, "--plan", "{F}/plan_rate_str.toml", expect="plan_rate_str.toml"),
    c("plan-rate-bool", "load", "run", *MEM, "--plan", "{F}/plan_rate_bool.toml", expect="rate"),
    c("plan-rate-negative", "load", "run", *MEM, "--plan", "{F}/plan_rate_neg.toml", expect="rate"),
    c("plan-rate-nan", "load", "run", *MEM, "--plan", "{F}/plan_rate_nan.toml", expect="rate"),
    c("plan-rate-inf", "load", "run", *MEM, "--plan", "{F}/plan_rate_inf.toml", expect="rate"),
    c("plan-duration-bool", "load", "run", *MEM, "--plan", "{F}/plan_duration_bool.toml", expect="duration"),
    c("plan-duration-text", "load", "run", *MEM, "--plan", "{F}/plan_duration_text.toml",
      expect="plan_duration_text.toml"),
    c("plan-duration-1e400", "load", "run", *MEM, "--plan", "{F}/plan_duration_huge.toml", expect="duration"),
    c("plan-requests-str", "load", "run", *MEM, "--plan", "{F}/plan_requests_str.toml", expect="requests"),
    c("plan-requests-float", "load", "run", *MEM, "--plan", "{F}/plan_requests_float.toml", expect="requests"),
    c("plan-queue-int", "load", "run", *MEM, "--plan", "{F}/plan_queue_int.toml", expect="queue"),
    c("plan-queue-empty", "load", "run", *MEM, "--plan", "{F}/plan_queue_empty.toml", expect="queue"),
    c("plan-schedule-not-table", "load", "run", *MEM, "--plan", "{F}/plan_schedule_str.toml", expect="schedule"),
    c("plan-payload-not-table", "load", "run", *MEM, "--plan", "{F}/plan_payload_int.toml", expect="payload"),
    c("plan-slo-not-table", "load", "run", *MEM, "--plan", "{F}/plan_slo_str.toml", expect="slo"),
    c("plan-kind-bogus", "load", "run", *MEM, "--plan", "{F}/plan_kind_bogus.toml", expect="bogus"),
    c("plan-kind-int", "load", "run", *MEM, "--plan", "{F}/plan_kind_int.toml", expect="kind"),
    c("plan-steps-int", "load", "run", *MEM, "--plan", "{F}/plan_steps_int.toml", expect="steps"),
    c("plan-steps-bad", "load", "run", *MEM, "--plan", "{F}/plan_steps_bad.toml", expect="step"),
    c("plan-file-int", "load", "run", *MEM, "--plan", "{F}/plan_file_int.toml", expect="file"),
    c("plan-concurrency-str", "load", "run", *MEM, "--plan", "{F}/plan_concurrency_str.toml",
      expect="concurrency"),
    c("plan-seed-float", "load", "run", *MEM, "--plan", "{F}/plan_seed_float.toml", expect="seed"),
    c("plan-from-str", "load", "run", *MEM, "--plan", "{F}/plan_from_str.toml", expect="from"),
    c("plan-size-negative", "load", "run", *MEM, "--plan", "{F}/plan_size_neg.toml", expect="payload"),
    c("plan-text-int", "load", "run", *MEM, "--plan", "{F}/plan_text_int.toml", expect="text"),
    c("plan-no-queue", "load", "run", *MEM, "--plan", "{F}/plan_no_queue.toml", expect="queue"),
    c("plan-invalid-toml", "load", "run", *MEM, "--plan", "{F}/plan_invalid.toml", expect="toml"),
    c("plan-empty", "load", "run", *MEM, "--plan", "{F}/plan_empty.toml", expect="queue"),
    c("plan-max-outage-list", "load", "run", *MEM, "--plan", "{F}/plan_max_outage.toml", expect="max_outage"),
    c("plan-broker-int", "load", "run", "--plan", "{F}/plan_broker_int.toml", expect="broker"),
    c("plan-binary", "load", "run", *MEM, "--plan", "{F}/plan_binary.toml", expect="plan_binary.toml"),
    c("plan-latin1", "load", "run", *MEM, "--plan", "{F}/plan_latin1.toml", expect="plan_latin1.toml"),
    c("plan-missing", "load", "run", *MEM, "--plan", "{F}/no_such_plan.toml", expect="no_such_plan.toml"),
    c("plan-directory", "load", "run", *MEM, "--plan", "{F}", expect="plan"),
    # --- LLM-shaped load: datasets of lengths, --max-tokens, LLM plan keys, whole-run figures in --abort-on -----------
    *(c(f"dataset-{name.removeprefix('ds_').replace('.', '-')}", *RUN_OK, "--dataset", f"{{F}}/{name}",
        expect=f"{name}{where}")
      for name, where in (("ds_empty.jsonl", " has no usable rows"), ("ds_header.csv", " has no usable rows"),
                          ("ds_nocol.csv", " line 1"), ("ds_word.csv", " line 3"), ("ds_zero.jsonl", " line 2"),
                          ("ds_negative.tsv", " line 2"), ("ds_huge.csv", " line 2"), ("ds_notjson.jsonl", " line 1"),
                          ("ds_latin1.csv", " line 3: not UTF-8"), ("ds_sharegpt_short.json", " has no usable rows"),
                          ("ds_sharegpt_bad.json", " line 2"), ("no_such_dataset.jsonl", ""),
                          ("ds_bigint.jsonl", " line 1"), ("ds_deep.jsonl", " line 2: not JSON (nested too deep)"),
                          ("ds_deep_sharegpt.json", " line 1: not JSON (nested too deep)"))),
    c("dataset-directory", *RUN_OK, "--dataset", "{F}", expect="cannot read dataset"),
    c("dataset-and-input-tokens", *RUN_OK, "--dataset", "{F}/ds_ok.jsonl", "--input-tokens", "5",
      expect="--dataset and --input-tokens cannot go together"),
    c("max-tokens-zero", *RUN_OK, "--output-tokens", "8", "--max-tokens", "0", expect="--max-tokens"),
    c("max-tokens-huge", *RUN_OK, "--output-tokens", "8", "--max-tokens", "2000000", expect="--max-tokens"),
    c("max-tokens-word", *RUN_OK, "--output-tokens", "8", "--max-tokens", "abc", expect="--max-tokens"),
    c("max-tokens-alone", *RUN_OK, "--max-tokens", "8", expect="--max-tokens caps the output lengths"),
    c("abort-on-attainment", *RUN_OK, "--abort-on", "attainment>=99% for 5s", expect="whole-run figure"),
    c("abort-on-goodput", *RUN_OK, "--abort-on", "goodput>=5/s for 5s", expect="whole-run figure"),
    c("plan-llm-objective-typo", "load", "run", *MEM, "--plan", "{F}/plan_llm_objective.toml",
      expect="did you mean 'objectives'"),
    c("plan-llm-tokens-bool", "load", "run", *MEM, "--plan", "{F}/plan_llm_tokens_bool.toml", expect="input_tokens"),
    c("plan-llm-gamma", "load", "run", *MEM, "--plan", "{F}/plan_llm_gamma.toml",
      expect="plan_llm_gamma.toml: output_tokens"),
    c("plan-llm-objectives-str", "load", "run", *MEM, "--plan", "{F}/plan_llm_objectives_str.toml",
      expect="objectives must be a list"),
    c("plan-llm-objective-bad", "load", "run", *MEM, "--plan", "{F}/plan_llm_objective_bad.toml",
      expect="plan_llm_objective_bad.toml: objective"),
    c("plan-llm-dataset-and-lengths", "load", "run", *MEM, "--plan", "{F}/plan_llm_both.toml",
      expect="cannot go together"),
    c("plan-llm-no-dataset", "load", "run", *MEM, "--plan", "{F}/plan_llm_no_dataset.toml",
      expect="plan_llm_no_dataset.toml: cannot read dataset"),
    c("plan-llm-cap-alone", "load", "run", *MEM, "--plan", "{F}/plan_llm_cap_alone.toml",
      expect="max_tokens caps"),
    c("search-llm-plan", "load", "search", *MEM, "--slo", "p99<1s", "--plan", "{F}/plan_llm_ok.toml",
      expect="a search does not send LLM-shaped load"),
    # --- traces ------------------------------------------------------------------------------------------------
    *(c(f"trace-{name.removeprefix('trace_').removesuffix('.csv')}", *RUN, "--schedule", "trace", "--trace",
        f"{{F}}/{name}", expect=name)
      for name in ("trace_nocol.csv", "trace_word.csv", "trace_neg.csv", "trace_huge.csv", "trace_inf.csv",
                   "trace_nan.csv", "trace_week.csv", "trace_empty.csv", "trace_header.csv", "trace_size_word.csv",
                   "trace_size_neg.csv", "trace_size_huge.csv", "trace_latin1.csv", "trace_binary.csv",
                   "no_such_trace.csv")),
    c("trace-missing-option", *RUN, "--schedule", "trace", expect="--trace"),
    c("trace-directory", *RUN, "--schedule", "trace", "--trace", "{F}", expect="trace"),
    # --- summaries: gate and compare ----------------------------------------------------------------------------
    *(c(f"gate-{name.removeprefix('sum_').removesuffix('.json')}", "load", "gate", f"{{F}}/{name}",
        "--slo", "p99<1s", expect=name)
      for name in ("sum_notjson.json", "sum_list.json", "sum_empty.json", "sum_noversion.json", "sum_v99.json",
                   "sum_nocounts.json", "sum_string.json", "sum_binary.json", "no_such_summary.json")),
    c("gate-corrupt-histogram", "load", "gate", "{F}/sum_corrupt.json", "--slo", "p99<1s", expect="histogram"),
    c("gate-directory", "load", "gate", "{F}", "--slo", "p99<1s", expect="cannot read"),
    c("gate-no-slos", "load", "gate", "{F}/sum_ok_noslo.json", expect="--slo"),
    c("gate-bad-slo", "load", "gate", "{F}/sum_ok.json", "--slo", "p99<5", expect="unit"),
    c("gate-unknown-metric", "load", "gate", "{F}/sum_ok.json", "--slo", "bogus<1ms", expect="metric"),
    c("gate-missing-argument", "load", "gate", expect="missing argument"),
    *(c(f"compare-{name.removeprefix('sum_').removesuffix('.json')}", "load", "compare", "{F}/sum_ok.json",
        f"{{F}}/{name}", expect=name)
      for name in ("sum_notjson.json", "sum_list.json", "sum_noversion.json", "sum_v99.json", "sum_nocounts.json",
                   "sum_binary.json", "no_such_summary.json")),
    c("compare-base-missing", "load", "compare", "{F}/no_such_base.json", "{F}/sum_ok.json",
      expect="no_such_base.json"),
    c("compare-corrupt-histogram", "load", "compare", "{F}/sum_ok.json", "{F}/sum_corrupt.json",
      expect="histogram"),
    c("compare-different-tests", "load", "compare", "{F}/sum_ok.json", "{F}/sum_other_queue.json",
      expect="--anyway"),
    c("compare-regression-word", "load", "compare", "{F}/sum_ok.json", "{F}/sum_ok.json", "--max-regression",
      "abc", expect="--max-regression"),
    c("compare-regression-negative", "load", "compare", "{F}/sum_ok.json", "{F}/sum_ok.json",
      "--max-regression", "-5%", expect="--max-regression"),
    c("compare-regression-nan", "load", "compare", "{F}/sum_ok.json", "{F}/sum_ok.json", "--max-regression",
      "nan%", expect="--max-regression"),
    c("compare-regression-inf", "load", "compare", "{F}/sum_ok.json", "{F}/sum_ok.json", "--max-regression",
      "1e400%", expect="--max-regression"),
    c("compare-one-argument", "load", "compare", "{F}/sum_ok.json", expect="missing argument"),
    # --- profiles and the broker setting ------------------------------------------------------------------------
    c("profile-unknown-no-file", "queues", "-b", "nosuch", expect="unknown profile"),
    c("profile-unknown", "queues", "-b", "nosuch", config="prof_ok.toml", expect="unknown profile"),
    c("profile-no-broker", "queues", expect="no broker"),
    c("profile-no-broker-load", "load", "run", "-q", "q", "--rate", "10", "--duration", "1s", expect="no broker"),
    c("profile-env-malformed", "queues", env={"QDECK_BROKER": f"ftp://u:{PASSWORD}@h/"}, expect="unknown scheme"),
    c("profile-env-unknown", "lag", env={"QDECK_BROKER": "nosuch"}, expect="unknown profile"),
    c("profile-broken", "queues", config="prof_broken.toml", expect="prof_broken.toml"),
    c("profile-broken-brokers", "brokers", config="prof_broken.toml", expect="prof_broken.toml"),
    c("profile-broken-check", "brokers", "--check", config="prof_broken.toml", expect="prof_broken.toml"),
    c("profile-binary", "queues", config="prof_binary.toml", expect="prof_binary.toml"),
    c("profile-binary-brokers", "brokers", config="prof_binary.toml", expect="prof_binary.toml"),
    c("profile-defualt", "queues", "-b", "local", config="prof_defualt.toml",
      expect="unknown key 'defualt' (did you mean 'default'?)"),
    c("profile-defualt-brokers", "brokers", config="prof_defualt.toml", expect="did you mean 'default'"),
    c("profile-broker-typo", "brokers", config="prof_broker.toml", expect="did you mean 'brokers'"),
    c("profile-not-table", "queues", config="prof_notable.toml", expect="brokers"),
    c("profile-entry-str", "queues", config="prof_entry_str.toml", expect="url"),
    c("profile-no-url", "queues", "-b", "local", config="prof_nourl.toml", expect="url"),
    c("profile-url-int", "queues", "-b", "local", config="prof_urlint.toml", expect="url"),
    c("profile-password-env-unset", "queues", "-b", "local", config="prof_envunset.toml",
      expect="QDECK_BADINPUT_UNSET"),
    c("profile-password-env-int", "queues", "-b", "local", config="prof_envint.toml", expect="password_env"),
    c("profile-description-int", "brokers", config="prof_desc_int.toml", expect="description"),
    c("profile-bad-url", "queues", "-b", "local", config="prof_badurl.toml", expect="port"),
    c("profile-bad-scheme", "brokers", config="prof_scheme.toml", expect="scheme"),
    c("profile-default-missing", "queues", config="prof_default_missing.toml", expect="nope"),
    c("profile-default-int", "queues", config="prof_default_int.toml", expect="default"),
    c("profile-extra-table", "queues", "-b", "local", config="prof_extra_table.toml", expect="tls"),
    c("profile-directory", "queues", config="", expect="profiles"),  # $QDECK_CONFIG is the fixtures' folder
    c("profile-console", "console", "-b", "nosuch", config="prof_ok.toml", expect="unknown profile"),
    c("profile-worker", "worker", "-b", "nosuch", "-q", "q", config="prof_ok.toml", expect="unknown profile"),
    c("profile-agent", "load", "agent", "--master", "127.0.0.1:1", "-b", "nosuch", expect="unknown profile"),
    # --- unreachable brokers (nothing listens on port 1) -----------------------------------------------------------
    c("unreachable-redis-queues", "queues", "-b", UNREACHABLE_REDIS, expect="unreachable"),
    c("unreachable-redis-lag", "lag", "-i", "0", "-b", UNREACHABLE_REDIS, expect="unreachable"),
    c("unreachable-amqp-dlq-list", "dlq", "list", "-b", UNREACHABLE_AMQP, expect="unreachable"),
    c("unreachable-amqp-consumers", "consumers", "-b", UNREACHABLE_AMQP, expect="unreachable"),
    c("unreachable-redis-load-run", "load", "run", "-b", UNREACHABLE_REDIS, "-q", "q", "--rate", "10",
      "--duration", "1s", "--quiet", expect="unreachable"),
    *_url_cases(),
]

# a few cases run again as real subprocesses: the in-process path must behave the same
SUBPROCESS = ("no-such-option-typo", "dlq-peek-n-negative", "plan-slos", "plan-binary", "run-rate-1e12",
              "url-pw-port-worker", "profile-defualt")


def write_files(d: Path) -> None:
    """The cases' files: plans, traces, profile files, and summaries (one from a real run on the fake broker)."""
    for name, text in TEXT_FILES.items():
        (d / name).write_text(text, encoding="utf-8")
    for name, data in BINARY_FILES.items():
        (d / name).write_bytes(data)
    done = qdeck("load", "run", "-b", "memory://badinput-files", "-q", "q", "--rate", "20", "--duration", "0.3s",
                 "--quiet", "--out", str(d / "run"), "--slo", "p99<10s")
    assert done.code == 0, done.all
    summary = json.loads((d / "run" / "summary.json").read_text())
    (d / "sum_ok.json").write_text(json.dumps(summary))
    (d / "sum_ok_noslo.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "slo"}))
    other = json.loads(json.dumps(summary))
    other["queue"] = "another-queue"
    (d / "sum_other_queue.json").write_text(json.dumps(other))
    corrupt = json.loads(json.dumps(summary))
    corrupt["stages"]["end_to_end"]["histogram"] = "not-a-histogram"
    (d / "sum_corrupt.json").write_text(json.dumps(corrupt))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("bad-input")
    write_files(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _args(case: Case, d: Path) -> list[str]:
    return [a.replace("{F}", str(d)) for a in case.args]


def _config(case: Case, d: Path) -> str:
    if case.config is None:
        return NOWHERE
    return str(d / case.config) if case.config else str(d)


def _no_exec(*args: object) -> None:
    raise AssertionError("a bad-input case got as far as exec")


def run_in_process(args: list[str], config: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                   capfd: pytest.CaptureFixture[str]) -> Run:
    """``qdeck ARGS`` as the console script runs it: ``console.cli.main()`` with ``sys.argv`` set."""
    for key in list(os.environ):
        if key.startswith("QDECK_") and not key.startswith("QDECK_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.delenv("COLUMNS", raising=False)  # rich's 80 columns off a terminal: a wrapped line shows
    monkeypatch.setenv("QDECK_CONFIG", config)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["qdeck", *args])
    monkeypatch.setattr(os, "execve", _no_exec)
    capfd.readouterr()
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capfd.readouterr()
    return Run(code if isinstance(code, int) else (0 if code is None else 1), out, err)


def check(run: Run, case: Case) -> None:
    lines = run.err.strip().splitlines()
    assert "Traceback" not in run.all, run.all
    assert PASSWORD not in run.all, run.all
    assert len(lines) == 1, f"stderr should be one line:\n{run.err}"
    assert lines[0].startswith("qdeck: "), lines[0]
    assert run.code == 2, f"exit {run.code}: {run.err}"
    assert case.expect.lower() in lines[0].lower(), f"expected {case.expect!r} in {lines[0]!r}"
    assert not any(line.startswith(("Traceback", "  File ")) for line in run.out.splitlines()), run.out


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 150


@pytest.mark.timeout(15)
@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, files: Path, monkeypatch: pytest.MonkeyPatch,
                   capfd: pytest.CaptureFixture[str]) -> None:
    run = run_in_process(_args(case, files), _config(case, files), case.env, monkeypatch, capfd)
    check(run, case)


@pytest.mark.parametrize("case", [p for p in CASES if p.id in SUBPROCESS])
def test_a_subprocess_says_the_same(case: Case, files: Path, monkeypatch: pytest.MonkeyPatch,
                                    capfd: pytest.CaptureFixture[str]) -> None:
    real = qdeck(*_args(case, files), config=Path(_config(case, files)), env={"COLUMNS": "80", **case.env},
                 timeout=20)
    check(real, case)
    here = run_in_process(_args(case, files), _config(case, files), case.env, monkeypatch, capfd)
    assert (here.code, here.err, here.out) == (real.code, real.err, real.out)


def test_the_run_header_is_one_line(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    queue = "a-long-queue-name-" + "x" * 80
    run = run_in_process(["load", "run", "-b", "memory://badinput-header", "-q", queue, "--rate", "20",
                          "--duration", "0.2s", "--json"], NOWHERE, {}, monkeypatch, capfd)
    assert run.code == 0, run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdeck load: constant 20/s → " + queue), run.err


@pytest.mark.parametrize("args", [["--help"], ["load", "run", "--help"], ["dlq", "peek", "-h"]])
def test_help_still_works(args: list[str], monkeypatch: pytest.MonkeyPatch,
                          capfd: pytest.CaptureFixture[str]) -> None:
    run = run_in_process(args, NOWHERE, {}, monkeypatch, capfd)
    assert run.code == 0 and "Usage" in run.out and not run.err, run.all


def test_steps_default_their_duration(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    run = run_in_process(["load", "run", "-b", "memory://badinput-steps", "-q", "q", "--schedule", "steps",
                          "--steps", "20:0.2s,40:0.2s", "--json", "--quiet"], NOWHERE, {}, monkeypatch, capfd)
    assert run.code == 0, run.err
    assert json.loads(run.out)["duration_s"] == pytest.approx(0.4, abs=0.05)
