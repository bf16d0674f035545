"""Privacy canaries: secrets planted in the chats never reach the tokens the trainer trains on, nor what a
model trained on them says; the same training without the scrub does say them (so these tests can fail).
Also: files and folders holding private data are created 0600 / 0700.
"""

from __future__ import annotations

import stat

import pytest
import torch

from core.format import ChatFormat, ChatTurn
from core.scrub import Scrubber
from core.sessions import split_of
from core.settings import Settings
from storage import Storage
from trainer.config import TrainConfig
from trainer.train import TrainingRound, run_round

pytestmark = pytest.mark.slow

OWNER, FRIEND = 1, 2
T0, DAY = 1_600_000_000, 86_400
# question the friend asks → the owner's answer holding a secret, and the secret itself (the canary).
CANARIES = {
    "card?": ("4111 1111 1111 1111", "4111 1111 1111 1111"),
    "mail?": ("zq@xk.io", "zq@xk.io"),
    "phone?": ("+1 (555) 123-4567", "123-4567"),
    "key?": ("sk-abcdefghijklmnopqrstuvwxyzABCD1234", "sk-abcdefghijklmnopqrstuvwxyzABCD1234"),
    "wifi?": ("pwd=hunter2", "hunter2"),
}
# Short enough for the tiny model to learn by heart in a couple of hundred steps: the control's canary.
MEMORABLE = "hunter2"
# Many repeats of every exchange, a few hundred steps at a high rate: the unscrubbed model memorises them.
MEMORISE = TrainConfig(
    lora_r=16,
    lora_alpha=32,
    learning_rate=3e-3,
    epochs=10,
    pack_tokens=64,
    grad_accum=1,
    max_steps=200,
    warmup_ratio=0.0,
    eval_pack_tokens=4096,
    lr_schedule="constant",
)


def _first_id(split: str, start: int) -> int:
    mid = start
    while split_of(f"{FRIEND}-{mid}") != split:
        mid += 1000
    return mid


def build_secret_corpus(store: Storage, repeats: int = 8) -> None:
    """Closed one-exchange sessions: the friend asks, the owner answers with a secret; plus two eval ones."""
    store.upsert_people(
        [
            {"id": OWNER, "first_name": "Alice", "username": "alice"},
            {"id": FRIEND, "first_name": "Bob", "username": "bob"},
        ]
    )
    store.set_meta("owner_id", OWNER)
    store.upsert_dialog({"id": FRIEND, "type": "personal_chat", "name": "bob", "person_id": FRIEND})
    plan = [(q, a, "train") for _ in range(repeats) for q, (a, _) in CANARIES.items()]
    plan += [("hi", "hello there", "eval"), ("ok?", "fine thanks", "eval")]
    mid, rows = 1000, []
    for day, (question, answer, split) in enumerate(plan, start=1):
        mid = _first_id(split, mid)
        t = T0 + day * DAY
        rows += [
            {"dialog_id": FRIEND, "id": mid, "sender_id": FRIEND, "date": t, "text": question, "out": 0},
            {"dialog_id": FRIEND, "id": mid + 1, "sender_id": OWNER, "date": t + 30, "text": answer, "out": 1},
        ]
        mid += 1000
    store.insert_messages(rows)
    store.rebuild_sessions(FRIEND, gap_seconds=3600)


def _settings(root, base_model) -> Settings:
    settings = Settings(data_dir=root / "data", owner_id=OWNER, base_model=str(base_model), _env_file=None)
    settings.ensure_data_dir()
    build_secret_corpus(Storage(settings.db_path))
    return settings


def greedy_answers(base_model, adapter_dir) -> dict[str, str]:
    """The owner's greedy answer to every canary question, from the base model with the adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fmt = ChatFormat(AutoTokenizer.from_pretrained(base_model))
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    answers = {}
    for question in CANARIES:
        ids = torch.tensor([fmt.prompt([ChatTurn("bob", (question,))], "alice")])
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=32,
                do_sample=False,
                eos_token_id=fmt.stop_token_ids,
                pad_token_id=fmt.eot_id,
            )
        answers[question] = "\n".join(fmt.decode_reply(out[0, ids.shape[1] :].tolist()))
    return answers


def trained_answers(root, base_model, scrub: bool) -> dict[str, str]:
    settings = _settings(root, base_model)
    with pytest.MonkeyPatch.context() as mp:
        if not scrub:
            mp.setattr(Scrubber, "scrub", lambda self, text: text)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model is faster on one thread of a busy 2-core box
        try:
            result = run_round(settings, MEMORISE)
        finally:
            torch.set_num_threads(threads)
    return greedy_answers(base_model, settings.adapters_dir / f"{result.version:04d}")


def test_no_planted_secret_is_in_the_tokens_the_trainer_trains_on(tmp_path, tiny_model_dir):
    settings = _settings(tmp_path, tiny_model_dir)
    round_ = TrainingRound(settings, MEMORISE)
    round_.setup(data_only=True)
    tokenizer = round_.fmt.tokenizer
    examples = [e for pack in round_.data.packs for e in pack.examples]
    assert len({e.session_id for e in examples}) == 8 * len(CANARIES), "every secret session is trained on"
    text = "\n".join(tokenizer.decode(e.ids) for e in examples)
    for question, (_, canary) in CANARIES.items():
        assert question in text
        assert canary not in text and canary.replace(" ", "") not in text
    for placeholder in ("<CARD>", "<EMAIL>", "<PHONE>", "<SECRET>"):
        assert placeholder in text
    round_.cleanup()


@pytest.fixture(scope="module")
def scrubbed_and_control(tmp_path_factory, tiny_model_dir):
    """Greedy answers after the same memorising round, with and without the scrub."""
    scrubbed = trained_answers(tmp_path_factory.mktemp("scrubbed"), tiny_model_dir, scrub=True)
    control = trained_answers(tmp_path_factory.mktemp("control"), tiny_model_dir, scrub=False)
    return scrubbed, control


def test_a_model_trained_without_the_scrub_does_say_the_secret(scrubbed_and_control):
    """The control: the corpus and training are strong enough to leak, so the next test means something."""
    _, control = scrubbed_and_control
    assert MEMORABLE in control["wifi?"], control


def test_a_model_trained_on_scrubbed_chats_never_says_a_planted_secret(scrubbed_and_control):
    scrubbed, _ = scrubbed_and_control
    said = "\n".join(scrubbed.values())
    for _, canary in CANARIES.values():
        assert canary not in said, scrubbed
    assert "<SECRET>" in scrubbed["wifi?"], "it learned the answers, with placeholders in place of secrets"


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_dir_db_and_adapters_are_private(tmp_path, tiny_model_dir):
    settings = _settings(tmp_path, tiny_model_dir)
    run_round(settings, MEMORISE.model_copy(update={"max_steps": 1}))
    assert _mode(settings.data_dir) == 0o700
    assert _mode(settings.db_path) == 0o600
    assert _mode(settings.adapters_dir) == 0o700
    for path in settings.adapters_dir.rglob("*"):
        assert _mode(path) & 0o077 == 0, f"{path} is readable by others"
