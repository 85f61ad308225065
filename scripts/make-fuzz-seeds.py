#!/usr/bin/env python3
"""Writes the committed fuzz seed corpora (fuzz/corpus/<target>/seed-*) from the test fixtures.

Seed names carry the outcome the seed must have, and tests/operator/fuzz_corpus.rs asserts it:
  signature_header: seed-<tag>-valid / seed-<tag>-invalid   (file = header \\n secret \\n body)
  event_parse:      seed-ok-<name> / seed-err-<name>         (file = request body)
  rule_matching:    seed-match-<name> / seed-nomatch-<name>
                    (file = type \\n filter types \\n new state \\n old state \\n filter new \\n filter old)
Rerun after changing the fixtures: python3 scripts/make-fuzz-seeds.py
"""
import json
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "asc"
CORPUS = ROOT / "fuzz" / "corpus"


def fresh(target):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    return d


def signature_seeds():
    d = fresh("signature_header")
    vectors = json.loads((FIXTURES / "signature-vectors.json").read_text())["vectors"]
    for i, v in enumerate(vectors):
        body = (FIXTURES / v["body_file"]).read_bytes()
        data = v["x-apple-signature"].encode() + b"\n" + v["secret"].encode() + b"\n" + body
        outcome = "valid" if v["valid"] else "invalid"
        (d / f"seed-v{i:02d}-{outcome}").write_bytes(data)
    # Variants of the first valid vector that the vectors do not cover.
    first = next(v for v in vectors if v["valid"])
    body = (FIXTURES / first["body_file"]).read_bytes()
    sig, secret = first["x-apple-signature"], first["secret"].encode()
    extra = {
        "padded-valid": ("  " + sig + "\t").encode(),
        "upper-scheme-valid": ("HMACSHA256=" + sig.split("=", 1)[1]).encode(),
        "no-header-invalid": b"",
        "extra-digit-invalid": (sig + "0").encode(),
        "non-ascii-invalid": ("hmacsha256=" + "é" * 32).encode(),
    }
    for tag, header in extra.items():
        (d / f"seed-x-{tag}").write_bytes(header + b"\n" + secret + b"\n" + body)
    # Empty body and empty secret: HMAC is still defined.
    (d / "seed-x-empty-body-invalid").write_bytes(sig.encode() + b"\n" + secret + b"\n")


def event_seeds():
    d = fresh("event_parse")
    for path in sorted((FIXTURES / "events").glob("*.json")):
        shutil.copyfile(path, d / f"seed-ok-{path.stem}")
    handmade = {
        "ok-testflight-external-state": '{"data":{"type":"buildBetaDetailExternalBuildStateUpdated","id":"e1","attributes":{"oldExternalBuildState":"IN_BETA_REVIEW","newExternalBuildState":"BETA_APPROVED"},"relationships":{"instance":{"data":{"type":"buildBetaDetails","id":"b1"}}}}}',
        "ok-unknown-type-and-state": '{"data":{"type":"backgroundAssetVersionStateUpdated","id":"x","attributes":{"oldAssetState":"A","newAssetState":"SOMETHING_NEW"}}}',
        "ok-screaming-type": '{"data":{"type":"BUILD_UPLOAD_STATE_UPDATED","id":"s1","attributes":{"newState":"FAILED"}}}',
        "ok-odd-type-label": '{"data":{"type":"weird type/with spaces and ünïcode","id":"u1"}}',
        "ok-lone-surrogate-in-unknown-field": '{"data":{"type":"x","id":"s","note":"\\ud800"}}',
        "err-not-json": "not json",
        "err-no-data": "{}",
        "err-no-id": '{"data":{"type":"x"}}',
        "err-empty-type": '{"data":{"id":"x","type":""}}',
        "err-blank-id": '{"data":{"id":"  ","type":"x"}}',
        "err-numeric-id": '{"data":{"id":7,"type":"x"}}',
        "err-array": "[1,2]",
        "err-duplicate-data": '{"data":{"id":"a","type":"x"},"data":{"id":"b","type":"x"}}',
    }
    for name, text in handmade.items():
        (d / f"seed-{name}").write_bytes(text.encode())


def matching_seeds():
    d = fresh("rule_matching")
    known = [
        "webhookPingCreated",
        "buildUploadStateUpdated",
        "appStoreVersionAppVersionStateUpdated",
        "buildBetaDetailExternalBuildStateUpdated",
        "betaFeedbackCrashSubmissionCreated",
        "betaFeedbackScreenshotSubmissionCreated",
        "backgroundAssetVersionStateUpdated",
    ]

    def snake(name):
        return "".join("_" + c if c.isupper() else c for c in name).upper()

    for name in known:
        (d / f"seed-match-{name}-subscription-name").write_bytes(f"{name}\n{snake(name)}".encode())
        (d / f"seed-match-{name}-reverse").write_bytes(f"{snake(name)}\n{name}".encode())
    pairs = {
        "nomatch-prefix-only": "buildUploadStateUpdated\nBUILD_UPLOAD_STATE",
        "nomatch-other-type": "webhookPingCreated\nbuildUploadStateUpdated",
        "match-empty-filter-takes-any-but-ping": "buildUploadStateUpdated\n",
        "nomatch-empty-filter-ping": "webhookPingCreated\n",
        "match-type-and-states": "buildUploadStateUpdated\nBUILD_UPLOAD_STATE_UPDATED\nCOMPLETE\nPROCESSING\nCOMPLETE\nPROCESSING",
        "match-state-case-and-list": "appStoreVersionAppVersionStateUpdated\nbuildUploadStateUpdated,APP_STORE_VERSION_APP_VERSION_STATE_UPDATED\nrejected\n\nMETADATA_REJECTED,REJECTED\n",
        "nomatch-wrong-new-state": "buildUploadStateUpdated\nBUILD_UPLOAD_STATE_UPDATED\nFAILED\n\nCOMPLETE\n",
        "nomatch-old-state-missing": "buildUploadStateUpdated\n\nCOMPLETE\n\n\nPROCESSING",
        "match-unknown-type-new-state": "backgroundAssetVersionStateUpdated\n\nBRAND_NEW_STATE\n\nBRAND_NEW_STATE\n",
        "match-empty-both": "\n",
        "match-odd-underscores": "buildUploadStateUpdated\n__build_upload__STATE_updated_",
        "nomatch-non-ascii-case": "ÄbcStateUpdated\näBC_STATE_UPDATED",
    }
    for name, text in pairs.items():
        (d / f"seed-{name}").write_bytes(text.encode())


if __name__ == "__main__":
    signature_seeds()
    event_seeds()
    matching_seeds()
    for target in sorted(CORPUS.iterdir()):
        print(target.name, len(list(target.glob("seed-*"))), "seeds")
