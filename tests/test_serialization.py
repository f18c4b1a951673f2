"""save_pretrained / from_pretrained and the weight-file helpers under bad input, corruption and crashes."""

import json
import random
import threading
import time

import helpers
import pytest
import torch

from phenaki_pytorch import CViViT, MaskGit, Phenaki
from phenaki_pytorch import serialization as ser
from phenaki_pytorch.serialization import (
    CONFIG_NAME,
    MODEL_CARD_NAME,
    WEIGHTS_NAME,
    atomic_save_safetensors,
    load_state_dict_file,
    nonfinite_tensors,
)

FOLDER_FILES = sorted([CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME])


def tiny_cvivit(seed: int = 0, **overrides) -> CViViT:
    torch.manual_seed(seed)
    return helpers.tiny_cvivit(use_gan=False, **overrides)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def flip_byte(path, offset: int, mask: int = 0x01):
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def rewrite_config(folder, edit, keep_checksum: bool = True):
    """Edit config.json's payload; with `keep_checksum` the self-checksum is recomputed (a deliberate craft)."""
    path = folder / CONFIG_NAME
    payload = json.loads(path.read_text())
    edit(payload)
    if keep_checksum and "config_sha256" in payload:
        payload["config_sha256"] = ser._payload_digest(payload)
    path.write_text(json.dumps(payload))


@pytest.fixture
def saved(tmp_path):
    model = tiny_cvivit()
    folder = model.save_pretrained(tmp_path / "model")
    return model, folder


# ---------------------------------------------------------------------------------------------- the format


def test_round_trip_records_hashes_and_leaves_no_temporaries(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == FOLDER_FILES
    payload = json.loads((folder / CONFIG_NAME).read_text())
    assert payload["format_version"] == 2 and payload["class_path"] == "phenaki_pytorch.cvivit.CViViT"
    assert payload["weights"]["sha256"] == ser.file_sha256(folder / WEIGHTS_NAME)
    rebuilt = CViViT.from_pretrained(folder)
    assert type(rebuilt) is CViViT and rebuilt.config == model.config and same_weights(rebuilt, model)
    # saving again over the folder replaces both files as a pair
    other = tiny_cvivit(seed=1)
    other.save_pretrained(folder)
    assert same_weights(CViViT.from_pretrained(folder), other)


def test_nested_models_round_trip(tmp_path):
    torch.manual_seed(0)
    phenaki = helpers.tiny_phenaki(critic=helpers.tiny_critic())
    phenaki.save_pretrained(tmp_path)
    rebuilt = Phenaki.from_pretrained(tmp_path, text_encoder=helpers.hashed_text_encoder())
    assert same_weights(rebuilt, phenaki)
    assert type(rebuilt.maskgit) is MaskGit


def test_folders_of_format_version_1_still_load(tmp_path):
    """What save_pretrained wrote before the hashes: bare class name, no weights record."""
    from safetensors.torch import save_file

    model = tiny_cvivit()
    payload = {"class": "CViViT", "format_version": 1, "config": model.config}
    (tmp_path / CONFIG_NAME).write_text(json.dumps(payload, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / WEIGHTS_NAME))
    assert same_weights(CViViT.from_pretrained(tmp_path), model)


def test_a_class_sharing_a_bare_name_is_never_picked(saved):
    model, folder = saved

    class CViViT(ser.ConfigMixin, torch.nn.Module):  # noqa: F811 -- the point: a different class, same name
        def __init__(self, **kwargs):
            super().__init__()

    # the old registry was keyed by bare name, so the class defined last answered for every "CViViT"
    from phenaki_pytorch import CViViT as Real

    assert type(Real.from_pretrained(folder)) is Real
    with pytest.raises(ValueError, match="not a CViViT"):
        CViViT.from_pretrained(folder)
    # a config naming a class that is not loaded is an error, not a guess
    rewrite_config(folder, lambda p: p.update(class_path="somewhere.else.CViViT"))
    with pytest.raises(ValueError, match="somewhere.else.CViViT"):
        Real.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------- bad configs


def _list(folder):
    (folder / CONFIG_NAME).write_text("[1, 2, 3]")


def _no_config_key(folder):
    rewrite_config(folder, lambda p: p.pop("config"))


def _no_class_key(folder):
    rewrite_config(folder, lambda p: p.pop("class"))


def _not_utf8(folder):
    (folder / CONFIG_NAME).write_bytes(b'{"class": "CViViT", "config": {"dim": 32}, "x": "\xff\xfe"}')


def _not_json(folder):
    (folder / CONFIG_NAME).write_text('{"class": "CViViT", ')


def _config_not_an_object(folder):
    rewrite_config(folder, lambda p: p.update(config=[1, 2]))


def _edited_without_checksum(folder):
    rewrite_config(folder, lambda p: p["config"].update(dim=48), keep_checksum=False)


def _crafted_dim(folder):  # a checksum is no signature: a crafted file recomputes it
    rewrite_config(folder, lambda p: p["config"].update(dim=10**9))


def _crafted_large_dim(folder):  # builds on the meta device, then fails the comparison with the weights
    rewrite_config(folder, lambda p: p["config"].update(dim=10**5))


def _crafted_depth(folder):
    rewrite_config(folder, lambda p: p["config"].update(spatial_depth=10**9))


def _mismatched_size(folder):
    rewrite_config(folder, lambda p: p["config"].update(dim=48))


def _wrong_type(folder):
    rewrite_config(folder, lambda p: p["config"].update(dim="large"))


def _unknown_argument(folder):
    rewrite_config(folder, lambda p: p["config"].update(no_such_argument=1))


def _weights_from_another_model(folder):
    tiny_cvivit(seed=5).save(folder / WEIGHTS_NAME)


def _other_architecture_weights(folder):  # a config without hashes (version 1) beside weights of another shape
    rewrite_config(folder, lambda p: (p.pop("weights"), p.pop("config_sha256"), p.update(format_version=1)))
    tiny_cvivit(dim=48).save(folder / WEIGHTS_NAME)


def _newer_format(folder):
    rewrite_config(folder, lambda p: p.update(format_version=99))


def _path_in_weights_name(folder):
    rewrite_config(folder, lambda p: p["weights"].update(file="../../etc/passwd"))


def _truncated_weights(folder):
    path = folder / WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[:1000])


BAD_FOLDERS = {
    "list": (_list, "JSON list"),
    "no_config_key": (_no_config_key, "lacks 'config'"),
    "no_class_key": (_no_class_key, "lacks 'class'"),
    "not_utf8": (_not_utf8, "not UTF-8"),
    "not_json": (_not_json, "not valid JSON"),
    "config_not_an_object": (_config_not_an_object, "'config' an object"),
    "edited_without_checksum": (_edited_without_checksum, "own checksum"),
    "crafted_dim": (_crafted_dim, "does not build a CViViT"),
    "crafted_large_dim": (_crafted_large_dim, "shape"),
    "crafted_depth": (_crafted_depth, "more than"),
    "mismatched_size": (_mismatched_size, "shape"),
    "wrong_type": (_wrong_type, "dim"),
    "unknown_argument": (_unknown_argument, "no_such_argument"),
    "weights_from_another_model": (_weights_from_another_model, "does not match"),
    "other_architecture_weights": (_other_architecture_weights, "shape"),
    "newer_format": (_newer_format, "format_version 99"),
    "path_in_weights_name": (_path_in_weights_name, "plain file name"),
    "truncated_weights": (_truncated_weights, "model.safetensors"),
}


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_bad_folders_give_one_clear_error_naming_the_file(saved, case):
    _, folder = saved
    damage, expected = BAD_FOLDERS[case]
    damage(folder)
    started = time.perf_counter()
    with pytest.raises(ValueError) as info:
        CViViT.from_pretrained(folder)
    message = str(info.value)
    assert expected in message, message
    assert str(folder) in message, message  # names the file (config.json or model.safetensors in that folder)
    assert info.value.__cause__ is None  # one error, not a chain ending in a bare KeyError / RuntimeError
    assert time.perf_counter() - started < 10  # dim=10**9 and depth=10**9 fail before building anything real


def test_crafted_sizes_allocate_nothing(saved, monkeypatch):
    """dim=10**9 is refused on the meta device: no real tensor of the crafted size is ever created."""
    _, folder = saved
    _crafted_large_dim(folder)
    real_empty = torch.empty
    sizes = []

    def watching_empty(*args, **kwargs):
        tensor = real_empty(*args, **kwargs)
        if tensor.device.type != "meta":
            sizes.append(tensor.numel())
        return tensor

    monkeypatch.setattr(torch, "empty", watching_empty)
    with pytest.raises(ValueError, match="shape"):
        CViViT.from_pretrained(folder)
    assert max(sizes, default=0) < 10**7


# ---------------------------------------------------------------------------------------------- corruption


def test_a_flipped_byte_anywhere_in_the_weights_is_detected(saved):
    model, folder = saved
    path = folder / WEIGHTS_NAME
    original = path.read_bytes()
    rng = random.Random(0)
    offsets = [0, 7, 8, 20, len(original) - 1] + [rng.randrange(len(original)) for _ in range(25)]
    detected = 0
    for offset in offsets:
        path.write_bytes(original)
        flip_byte(path, offset, 1 << rng.randrange(8))
        with pytest.raises(ValueError, match="model.safetensors"):
            CViViT.from_pretrained(folder)
        detected += 1
    path.write_bytes(original)
    assert same_weights(CViViT.from_pretrained(folder), model)
    assert detected == len(offsets)


def test_a_flipped_byte_in_the_config_is_detected_or_harmless(saved):
    model, folder = saved
    path = folder / CONFIG_NAME
    original = path.read_bytes()
    rng = random.Random(1)
    errors = harmless = 0
    for _ in range(30):
        path.write_bytes(original)
        offset = rng.randrange(len(original))
        flip_byte(path, offset, 1 << rng.randrange(8))
        try:
            rebuilt = CViViT.from_pretrained(folder)
        except ValueError as error:
            assert "config.json" in str(error)
            errors += 1
            continue
        # JSON whitespace that stays whitespace (a space to a tab) changes nothing that is read
        assert json.loads(path.read_bytes()) == json.loads(original), offset
        assert rebuilt.config == model.config and same_weights(rebuilt, model)
        harmless += 1
    assert errors + harmless == 30 and errors >= 25


def test_standalone_safetensors_carry_a_tensor_hash(tmp_path):
    model = tiny_cvivit()
    path = tmp_path / "weights.safetensors"
    digest = atomic_save_safetensors(model, path)
    assert digest == ser.file_sha256(path)
    assert same_weights(tiny_cvivit(seed=3).load(path), model)  # CViViT.load goes through load_state_dict_file
    # one flipped bit in the tensor data (the end of the file is data)
    flip_byte(path, path.stat().st_size - 3)
    with pytest.raises(ValueError, match="weights.safetensors.*corrupt"):
        load_state_dict_file(path)


# ---------------------------------------------------------------------------------------------- non-finite


def test_non_finite_weights_are_never_written(tmp_path):
    good = tiny_cvivit()
    folder = good.save_pretrained(tmp_path / "model")
    before = {name: (folder / name).read_bytes() for name in (CONFIG_NAME, WEIGHTS_NAME)}
    poisoned = tiny_cvivit(seed=1)
    with torch.no_grad():
        next(poisoned.parameters())[0] = float("nan")
    assert nonfinite_tensors(poisoned.state_dict())
    with pytest.raises(ValueError, match="NaN or inf"):
        poisoned.save_pretrained(folder)
    with pytest.raises(ValueError, match="NaN or inf"):
        atomic_save_safetensors(poisoned, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in folder.iterdir()) == FOLDER_FILES
    # deliberately writing such weights remains possible
    poisoned.save_pretrained(tmp_path / "nan", allow_nonfinite=True)
    assert nonfinite_tensors(CViViT.from_pretrained(tmp_path / "nan").state_dict())


# ---------------------------------------------------------------------------------------------- crashes


class Killed(BaseException):
    """Stands in for the process dying: not an Exception, so nothing on the way catches it."""


@pytest.mark.parametrize("point", ["weights_write", "config_write", "weights_rename", "config_rename"])
def test_a_crash_at_any_point_of_save_pretrained_leaves_a_loadable_pair(tmp_path, monkeypatch, point):
    old, new = tiny_cvivit(seed=0), tiny_cvivit(seed=1)
    folder = old.save_pretrained(tmp_path / "model")
    import os

    real_replace, real_commit = os.replace, ser._commit
    if point == "weights_write":

        def dying_save_file(*args, **kwargs):
            raise Killed

        monkeypatch.setattr("safetensors.torch.save_file", dying_save_file)
    elif point == "config_write":
        monkeypatch.setattr(ser, "_write_text_temporary", lambda *a: (_ for _ in ()).throw(Killed()))
    elif point == "weights_rename":

        def dying_replace(src, dst):
            if str(dst).endswith(WEIGHTS_NAME):
                raise Killed
            return real_replace(src, dst)

        monkeypatch.setattr(ser.os, "replace", dying_replace)
    else:  # between the two renames: new weights in place, the new config still a temporary

        def dying_commit(tmp, path):
            if path.name == CONFIG_NAME:
                raise Killed
            return real_commit(tmp, path)

        monkeypatch.setattr(ser, "_commit", dying_commit)
    with pytest.raises(Killed):
        new.save_pretrained(folder)
    monkeypatch.undo()

    if point == "config_rename":
        with pytest.warns(RuntimeWarning, match="interrupted"):
            loaded = CViViT.from_pretrained(folder)
        assert same_weights(loaded, new)
    else:
        assert same_weights(CViViT.from_pretrained(folder), old)
        assert sorted(p.name for p in folder.iterdir()) == FOLDER_FILES
    # the next save cleans up whatever the crash left
    new.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == FOLDER_FILES
    assert same_weights(CViViT.from_pretrained(folder), new)


def test_concurrent_writers_and_a_reader_never_mix_files(tmp_path):
    """Two writers save different models to one folder over and over while a reader loads it."""
    models = [tiny_cvivit(seed=0), tiny_cvivit(seed=1)]
    folder = models[0].save_pretrained(tmp_path / "shared")
    references = [m.state_dict() for m in models]
    errors, loads, done = [], [], threading.Event()

    def write(model):
        try:
            for _ in range(6):
                model.save_pretrained(folder)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def read():
        while not done.is_set():
            try:
                state = CViViT.from_pretrained(folder).state_dict()
            except BaseException as error:
                errors.append(error)
                return
            matches = [all(torch.equal(state[k], ref[k]) for k in ref) for ref in references]
            loads.append(matches.index(True) if any(matches) else None)

    writers = [threading.Thread(target=write, args=(m,)) for m in models]
    reader = threading.Thread(target=read)
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    assert not errors, errors
    assert loads and None not in loads
    assert sorted(p.name for p in folder.iterdir()) == FOLDER_FILES


# ---------------------------------------------------------------------------------------------- the Hub


def fake_hub_cache(cache, repo_id, model, commit="0123456789abcdef0123456789abcdef01234567"):
    """The layout huggingface_hub's cache has after a download: refs/main -> snapshots/<commit>/files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    model.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_a_hub_id_loads_from_the_local_cache_offline(tmp_path):
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest: nothing may go over the network
    model = tiny_cvivit(seed=2)
    fake_hub_cache(tmp_path / "cache", "someone/tiny-tokenizer", model)
    loaded = CViViT.from_pretrained("someone/tiny-tokenizer", cache_dir=tmp_path / "cache")
    assert type(loaded) is CViViT and same_weights(loaded, model)

    torch.manual_seed(0)
    phenaki = helpers.tiny_phenaki(critic=helpers.tiny_critic())
    fake_hub_cache(tmp_path / "cache", "someone/tiny-phenaki", phenaki)
    rebuilt = Phenaki.from_pretrained(
        "someone/tiny-phenaki", cache_dir=tmp_path / "cache", text_encoder=helpers.hashed_text_encoder()
    )
    assert same_weights(rebuilt, phenaki)

    # neither a folder nor a cached repo: one FileNotFoundError that says both, no network attempt
    with pytest.raises(FileNotFoundError, match="someone/absent.*neither a local folder nor"):
        CViViT.from_pretrained("someone/absent", cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face Hub id"):
        CViViT.from_pretrained(str(tmp_path / "no" / "such" / "folder"))
    # the integrity checks hold for a snapshot too
    snapshot = next((tmp_path / "cache" / "models--someone--tiny-tokenizer" / "snapshots").iterdir())
    flip_byte(snapshot / WEIGHTS_NAME, 4000)
    with pytest.raises(ValueError, match="model.safetensors"):
        CViViT.from_pretrained("someone/tiny-tokenizer", cache_dir=tmp_path / "cache")


def test_push_to_hub_uploads_a_loadable_folder_with_a_model_card(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls, uploaded = [], tmp_path / "uploaded"

    class RepoUrl(str):
        repo_id = "someone/tiny"

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):  # the network call: copy what would be sent
        calls.append(("upload_folder", repo_id, kwargs))
        import shutil

        shutil.copytree(folder_path, uploaded)
        return "https://huggingface.co/someone/tiny/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)

    torch.manual_seed(0)
    phenaki = helpers.tiny_phenaki()
    url = phenaki.push_to_hub("someone/tiny", private=True, commit_message="first")
    assert url.endswith("/commit/abc")
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert calls[0][2]["private"] is True and calls[1][2]["commit_message"] == "first"
    assert sorted(p.name for p in uploaded.iterdir()) == FOLDER_FILES
    card = (uploaded / MODEL_CARD_NAME).read_text()
    assert "library_name: phenaki-pytorch" in card and 'Phenaki.from_pretrained("someone/tiny"' in card
    assert "text_encoder=..." in card  # the callable text encoder must be passed again, and the card says so
    rebuilt = Phenaki.from_pretrained(uploaded, text_encoder=helpers.hashed_text_encoder())
    assert same_weights(rebuilt, phenaki)

    # save_pretrained(push_to_hub=True) pushes too; an edited model card in the folder is kept
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / MODEL_CARD_NAME).write_text("my own card")
    calls.clear()
    import shutil

    shutil.rmtree(uploaded)
    phenaki.save_pretrained(folder, push_to_hub=True, repo_id="someone/tiny")
    assert (folder / MODEL_CARD_NAME).read_text() == "my own card"
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
