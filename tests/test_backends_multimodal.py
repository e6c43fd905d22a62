"""Video-LLaVA and LLaVA backends on tiny hub-layout checkpoints (save_pretrained + tokenizer):
preprocessing without torchvision, placeholder counts, prompt ids, image modes, cache,
left-padded batches. Tiny sizes: Llama hidden 32 x 2 layers; CLIP 32 px, patch 8
-> 16 patches (+ CLS)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import left_pad_rows
from PIL import Image

torch.set_num_threads(1)

from transformers import (  # noqa: E402
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    VideoLlavaConfig,
    VideoLlavaForConditionalGeneration,
)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil  # noqa: E402

from specalign.backends.common import ClipPreprocess, load_preprocess, tile_grid  # noqa: E402
from specalign.backends.llava import LlavaBackend  # noqa: E402
from specalign.backends.video_llava import VideoLlavaBackend  # noqa: E402
from specalign.dataset import Sample  # noqa: E402
from specalign.demo_tokenizer import add_target_tokens, build_backend, wrap  # noqa: E402
from specalign.models import ModelSpec  # noqa: E402
from specalign.video import uniform_frame_indices  # noqa: E402

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8, initializer_range=0.2)
PATCHES = (32 // 8) ** 2  # 16
QUESTIONS = ("What is in the scene?", "Describe the road and the cars in this scene in detail please.")
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def tok():
    texts = [*QUESTIONS, "USER: ASSISTANT:", "a red circle moves left", "a blue square moves up"]
    return add_target_tokens(wrap(build_backend(texts, 400)))


def _text_config(tok):
    return LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, initializer_range=0.2, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def _ids(tok):
    return dict(image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)


@pytest.fixture(scope="module")
def video_dir(tok, tmp_path_factory):
    torch.manual_seed(0)
    cfg = VideoLlavaConfig(vision_config=CLIPVisionConfig(**VISION), text_config=_text_config(tok),
                           video_token_index=tok.convert_tokens_to_ids("<video>"),
                           vision_feature_select_strategy="default", **_ids(tok))
    path = tmp_path_factory.mktemp("vl") / "video_llava"
    VideoLlavaForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    # the checkpoint's own preprocessing numbers (as Video-LLaVA-7B-hf ships a preprocessor_config.json)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                          image_mean=list(MEAN), image_std=list(STD)).save_pretrained(path)
    return path


def _llava_dir(tok, root, strategy):
    torch.manual_seed(1)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**VISION), text_config=_text_config(tok),
                      vision_feature_select_strategy=strategy, image_seq_length=PATCHES, **_ids(tok))
    path = root / f"llava_{strategy}"
    LlavaForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llava_dir(tok, tmp_path_factory):
    return _llava_dir(tok, tmp_path_factory.mktemp("llava"), "default")


@pytest.fixture(scope="module")
def vbackend(video_dir):
    return VideoLlavaBackend(ModelSpec(name="target", family="video_llava", path=str(video_dir)))


@pytest.fixture(scope="module")
def lbackend(llava_dir):
    return LlavaBackend(ModelSpec(name="llava", family="llava", path=str(llava_dir)))


def _frames(seed=0, n=8, h=24, w=32):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]




# --------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("hw", [(24, 40), (50, 30), (32, 32)])
def test_hand_preprocessing_equals_clip_image_processor(hw):
    img = np.random.default_rng(3).integers(0, 256, (*hw, 3), dtype=np.uint8)
    ref = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                image_mean=list(MEAN), image_std=list(STD))(images=img, return_tensors="pt")
    ours = ClipPreprocess.from_dict({"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32},
                                     "image_mean": MEAN, "image_std": STD})(img)
    assert ours.shape == (3, 32, 32)
    assert torch.allclose(ours, ref["pixel_values"][0], atol=1e-5)
    # LLaVA's pad-to-square (mean colour) variant
    ref = LlavaImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_pad=True,
                                 image_mean=list(MEAN), image_std=list(STD))(images=img, return_tensors="pt")
    ours = ClipPreprocess.from_dict({"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32},
                                     "image_mean": MEAN, "image_std": STD, "do_pad": True})(img)
    assert torch.allclose(ours, ref["pixel_values"][0], atol=1e-5)


def test_preprocess_defaults_and_size_check(tmp_path):
    pre = load_preprocess(tmp_path, 32)  # no config: CLIP defaults at the tower size
    assert pre.crop_hw == (32, 32) and pre.shortest_edge == 32 and pre.resample == 3
    assert pre.image_mean == (0.48145466, 0.4578275, 0.40821073)
    CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="vision tower"):
        load_preprocess(tmp_path, 32)


# --------------------------------------------------------------------------- Video-LLaVA
def test_video_llava_prompt_and_counts(vbackend, tok):
    b = vbackend
    assert b.num_visual_tokens == 8 * (PATCHES + 1) == 136
    assert b.image_processor.image_mean == MEAN  # read from the checkpoint's preprocessor_config.json
    ids, text = b.prompt_ids(QUESTIONS[0])
    assert text == "USER: <video>\nWhat is in the scene? ASSISTANT:"
    vid = tok.convert_tokens_to_ids("<video>")
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids.count(vid) == 136
    # what the HF processor does: the text with <video> written out 136 times, tokenised whole
    assert ids == tok(text.replace("<video>", "<video>" * 136)).input_ids
    assert (b.eos_token_id, b.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)


def test_video_llava_features_match_placeholders(vbackend):
    b = vbackend
    frames = _frames(0)
    pi = b.prepare_frames("s", QUESTIONS[0], frames)
    pv = pi.model_inputs["pixel_values_videos"]
    assert pv.shape == (1, 8, 3, 32, 32) and pv.dtype == torch.float32
    want = torch.stack([CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                              image_mean=list(MEAN), image_std=list(STD))(
        images=f, return_tensors="pt")["pixel_values"][0] for f in frames])
    assert torch.allclose(pv[0], want, atol=1e-5)
    with torch.no_grad():
        feats = b.model.model.get_video_features(pixel_values_videos=pv).pooler_output
    assert feats.flatten(0, 1).shape[0] == b.num_visual_tokens
    logits = b.forward(pi.input_ids[None], model_inputs=pi.model_inputs)
    assert logits.shape == (1, pi.input_ids.shape[0], b.text_vocab_size) and torch.isfinite(logits).all()


def test_video_llava_cache_and_batch(vbackend):
    b = vbackend
    pis = [b.prepare_frames(f"s{i}", q, _frames(i)) for i, q in enumerate(QUESTIONS)]
    # prefill + decode steps (pixels only in the prefill) == one full pass
    ids = pis[0].input_ids[None]
    full = b.forward(ids, model_inputs=pis[0].model_inputs)
    cache = b.new_cache()
    b.forward(ids[:, :-2], cache=cache, model_inputs=pis[0].model_inputs)
    s1 = b.forward(ids[:, -2:-1], cache=cache)
    s2 = b.forward(ids[:, -1:], cache=cache)
    assert torch.allclose(s1[0, -1], full[0, -2], atol=1e-5) and torch.allclose(s2[0, -1], full[0, -1], atol=1e-5)
    # left-padded batch == one by one
    bids, mask, pos = left_pad_rows([p.input_ids for p in pis], b.pad_token_id)
    batch = b.forward(bids, attention_mask=mask, position_ids=pos, model_inputs={
        "pixel_values_videos": torch.cat([p.model_inputs["pixel_values_videos"] for p in pis])})
    for i, p in enumerate(pis):
        one = b.forward(p.input_ids[None], model_inputs=p.model_inputs)[0]
        assert torch.allclose(batch[i, -p.input_ids.shape[0]:], one, atol=1e-4), i


def test_video_llava_prepare_from_png_folder(vbackend, tmp_path):
    frames = _frames(5, n=11, h=30, w=40)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{i:06d}.png")
    s = Sample(sample_id="seq/000001", question=QUESTIONS[1], video_dir=tmp_path)
    pi = vbackend.prepare(s)
    chosen = [frames[i] for i in uniform_frame_indices(11, 8)]
    assert torch.allclose(pi.model_inputs["pixel_values_videos"][0], vbackend.image_processor.batch(chosen))
    assert pi.input_ids.tolist() == vbackend.prompt_ids(QUESTIONS[1])[0] and pi.sample_id == "seq/000001"


# --------------------------------------------------------------------------- LLaVA
def test_llava_counts_and_prompt(lbackend, llava_dir, tok, tmp_path):
    b = lbackend
    assert b.num_visual_tokens == PATCHES  # CLS dropped under "default"
    ids, text = b.prompt_ids(QUESTIONS[1])
    assert text == "USER: <image>\n" + QUESTIONS[1] + " ASSISTANT:"
    img = tok.convert_tokens_to_ids("<image>")
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1 and ids.count(img) == PATCHES
    assert ids == tok(text.replace("<image>", "<image>" * PATCHES)).input_ids
    full = LlavaBackend(ModelSpec(name="l", family="llava", path=str(_llava_dir(tok, tmp_path, "full"))))
    assert full.num_visual_tokens == PATCHES + 1  # CLS kept under "full"
    for be in (b, full):
        pi = be.prepare_frames("s", QUESTIONS[0], _frames(1))
        with torch.no_grad():
            feats = be.model.model.get_image_features(pixel_values=pi.model_inputs["pixel_values"]).pooler_output
        assert sum(f.shape[0] for f in feats) == be.num_visual_tokens
        assert torch.isfinite(be.forward(pi.input_ids[None], model_inputs=pi.model_inputs)).all()


def test_llava_image_modes(lbackend, llava_dir):
    frames = _frames(2)  # 24 x 32 (4:3)
    middle = lbackend.pixel_values(frames)
    assert lbackend.image_mode == "middle" and middle.shape == (1, 3, 32, 32)
    assert torch.equal(middle[0], lbackend.image_processor(frames[4]))  # frames[len // 2]

    grid_b = LlavaBackend(ModelSpec(name="g", family="llava", path=str(llava_dir), options=(("image_mode", "grid"),)))
    grid = grid_b.pixel_values(frames)
    assert grid.shape == (1, 3, 32, 32)
    tiled = tile_grid(frames, 2, 4)
    assert tiled.shape == (48, 128, 3)
    assert np.array_equal(tiled[24:48, 96:128], frames[7]) and np.array_equal(tiled[0:24, 32:64], frames[1])
    ref = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})(
        images=tiled, return_tensors="pt")["pixel_values"][0]  # resize 48x128 -> 32x85, center crop 32
    assert torch.allclose(grid[0], ref, atol=1e-5)

    st = LlavaBackend(ModelSpec(name="g", family="llava", path=str(llava_dir),
                                options=(("grid_resize", "stretch"), ("image_mode", "grid"))))
    stretched = st.pixel_values(frames)
    want = ClipPreprocess.for_size(32)(np.asarray(Image.fromarray(tiled).resize((32, 32), Image.BICUBIC)))
    assert torch.allclose(stretched[0], want, atol=1e-6)
    with pytest.raises(ValueError, match="image_mode"):
        LlavaBackend(ModelSpec(name="x", family="llava", path=str(llava_dir), options=(("image_mode", "first"),)))


def test_llava_cache_and_batch(lbackend):
    b = lbackend
    pis = [b.prepare_frames(f"s{i}", q, _frames(i + 3)) for i, q in enumerate(QUESTIONS)]
    ids = pis[1].input_ids[None]
    full = b.forward(ids, model_inputs=pis[1].model_inputs)
    cache = b.new_cache()
    b.forward(ids[:, :-1], cache=cache, model_inputs=pis[1].model_inputs)
    step = b.forward(ids[:, -1:], cache=cache)
    assert torch.allclose(step[0, -1], full[0, -1], atol=1e-5)
    bids, mask, pos = left_pad_rows([p.input_ids for p in pis], b.pad_token_id)
    batch = b.forward(bids, attention_mask=mask, position_ids=pos, model_inputs={
        "pixel_values": torch.cat([p.model_inputs["pixel_values"] for p in pis])})
    for i, p in enumerate(pis):
        one = b.forward(p.input_ids[None], model_inputs=p.model_inputs)[0]
        assert torch.allclose(batch[i, -p.input_ids.shape[0]:], one, atol=1e-4), i


@pytest.mark.parametrize("which", ["video_llava", "llava"])
def test_greedy_generation_batched_equals_unbatched(which, vbackend, lbackend):
    """The generation stage's own loop: left-padded batches give the same greedy tokens."""
    from specalign.generation import Decoding, generate

    b = vbackend if which == "video_llava" else lbackend
    pis = [b.prepare_frames(f"s{i}", q, _frames(i)) for i, q in enumerate(QUESTIONS)]
    dec = Decoding("greedy", max_new_tokens=6)
    one = [g.token_ids for g in generate(b, pis, dec, batch_size=1)]
    many = [g.token_ids for g in generate(b, pis, dec, batch_size=len(pis))]
    assert one == many and all(len(t) > 0 for t in one)
