"""Model: shapes, pretrained-weight handling, frozen BatchNorm, greedy and beam decoding."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

import model
from captioning import backbone
from captioning.backbone import PretrainedWeightsUnavailable, weights_cache_path, weights_resize
from model import DecoderRNN, EncoderCNN

VOCAB = 20


# The decoders: one pooled feature per image; attention over cells; and attention that sees its own history.
DECODERS = pytest.mark.parametrize("kind", ["pooled", "attention", "coverage"])


def make_decoder(kind: str, embed: int = 16, hidden: int = 32) -> DecoderRNN:
    return DecoderRNN(embed, hidden, VOCAB, attention=kind != "pooled", coverage=kind == "coverage")


def image_features(batch: int, embed: int, attention: bool) -> torch.Tensor:
    """Random projected image features: (batch, embed), or with attention (batch, 1 + 6 cells, embed)."""
    return torch.randn(batch, 1 + 6, embed) if attention else torch.randn(batch, embed)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache in tmp_path, and any download attempt fails as it does offline."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError(f"offline test: {url}")
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "hub"


def test_encoder_output_shape_and_trainable_random_backbone(offline_hub):
    encoder = EncoderCNN(24, "resnet18", pretrained="no")
    assert encoder(torch.randn(3, 3, 32, 32)).shape == (3, 24)
    assert encoder.backbone_trainable  # auto: a random backbone must learn


def test_with_attention_an_image_is_its_pooled_feature_and_its_layer3_cells(offline_hub):
    encoder = EncoderCNN(24, "resnet18", pretrained="no", attention=True).eval()
    images = torch.randn(2, 3, 64, 64)
    flat = encoder.pooled_features(images)  # what the feature cache holds: 512 pooled, then 4 x 4 cells of 256
    assert flat.shape == (2, encoder.features_width(64)) == (2, 512 + 16 * 256)
    resnet = torch.nn.Sequential(*encoder.backbone[:-2])
    assert torch.allclose(flat[:, 512:].view(2, 16, 256), resnet(images).flatten(2).transpose(1, 2), atol=1e-5)
    assert torch.allclose(flat[:, :512], encoder.backbone(images).flatten(1), atol=1e-5)
    features = encoder.project(flat)
    assert features.shape == (2, 17, 24) and torch.equal(features, encoder(images))
    assert torch.allclose(features[:, 0], encoder.embed(flat[:, :512]))


def test_attending_over_layer4_an_image_is_its_pooled_feature_and_the_cells_it_is_the_mean_of(offline_hub):
    encoder = EncoderCNN(24, "resnet18", pretrained="no", attention=True, attention_stage="layer4").eval()
    images = torch.randn(2, 3, 64, 64)
    flat = encoder.pooled_features(images)  # 512 pooled, then 2 x 2 cells of layer4's 512 channels
    assert flat.shape == (2, encoder.features_width(64)) == (2, 512 + 4 * 512)
    layer4 = torch.nn.Sequential(*encoder.backbone[:-1])(images)
    assert encoder.feature_map(images).shape == layer4.shape == (2, 512, 2, 2)  # word maps are drawn on it
    cells = flat[:, 512:].view(2, 4, 512)
    torch.testing.assert_close(cells, layer4.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flat[:, :512], cells.mean(dim=1), atol=1e-5, rtol=1e-5)
    assert encoder(images).shape == (2, 5, 24)
    with pytest.raises(ValueError, match="layer3"):
        EncoderCNN(8, "resnet18", pretrained="no", attention=True, attention_stage="layer4", objects=5)


def test_with_objects_each_cell_adds_its_centre_probabilities_and_the_pooled_vector_their_sums(offline_hub, tmp_path):
    reference, head = torchvision.models.resnet18(), torch.nn.Conv2d(256, 5, kernel_size=1)  # 4 pairs and "none"
    path = tmp_path / "pretrained.pth"  # as pretrain_encoder.save_backbone writes it with the centre head
    torch.save({**reference.state_dict(), **{f"centres.{key}": value for key, value in head.state_dict().items()}},
               path)
    assert backbone.object_classes(str(path)) == 5
    encoder = EncoderCNN(24, "resnet18", pretrained="yes", weights=str(path), attention=True, objects=5).eval()
    assert torch.equal(encoder.backbone[0].weight, reference.conv1.weight) and not encoder.backbone_trainable
    images = torch.randn(2, 3, 64, 64)
    flat = encoder.pooled_features(images)  # 512 pooled, 4 counts, then 4 x 4 cells of 256 + 5 + 4 count features
    assert flat.shape == (2, encoder.features_width(64)) == (2, 512 + 4 + 16 * (256 + 5 + 4))
    layer3 = torch.nn.Sequential(*encoder.backbone[:-2])(images)
    found = head(layer3).softmax(dim=1).flatten(2).transpose(1, 2)  # (2, 16 cells, 5)
    counts = found[..., 1:].sum(dim=1)  # (2, 4 pairs)
    torch.testing.assert_close(flat[:, 512:516], counts, atol=1e-5, rtol=1e-5)
    cells = flat[:, 516:].view(2, 16, 265)
    torch.testing.assert_close(cells[..., :256], layer3.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cells[..., 256:261], found, atol=1e-5, rtol=1e-5)
    own = (found[..., 1:] * counts.unsqueeze(1)).sum(dim=2, keepdim=True)  # the count of each cell's likely pair
    torch.testing.assert_close(cells[..., 261:], model.count_features(own), atol=1e-5, rtol=1e-5)
    assert encoder(images).shape == (2, 17, 24)


@pytest.mark.parametrize("kind", ["pooled", "attention", "objects"])
def test_in_bf16_the_encoder_gives_the_features_of_fp32(offline_hub, tmp_path, kind):
    """precision "auto" is bf16 on CPUs with native bf16 (AVX512-BF16, AMX): the whole encoder, layer4 and the centre
    head after layer3's bf16 map included, must run there (it runs emulated, slowly, on any other CPU)."""
    options = {"pretrained": "no", "attention": kind != "pooled"}
    if kind == "objects":
        path = tmp_path / "pretrained.pth"
        head = torch.nn.Conv2d(256, 5, kernel_size=1)
        torch.save({**torchvision.models.resnet18().state_dict(),
                    **{f"centres.{key}": value for key, value in head.state_dict().items()}}, path)
        options.update(pretrained="yes", weights=str(path), objects=5)
    encoder = EncoderCNN(24, "resnet18", **options).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full, half = encoder.pooled_features(images), encoder.pooled_features(images, precision="bf16")
        maps = encoder.feature_map(images, precision="bf16")
        assert maps.dtype is torch.bfloat16
        assert torch.equal(encoder.pool(maps, precision="bf16"), half)
    assert half.shape == full.shape == (2, encoder.features_width(64))
    torch.testing.assert_close(half.float(), full, atol=0.1, rtol=0.05)  # bf16 keeps 8 bits of mantissa


def test_count_features_say_how_close_a_count_is_to_one_two_and_three_or_more():
    counts = torch.tensor([[0.0], [1.0], [1.5], [2.0], [3.0], [4.0]])
    assert model.count_features(counts).tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1.5, 0.5, 0.5, 0], [2, 0, 1, 0],
                                                     [3, 0, 0, 1], [4, 0, 0, 1]]


def test_objects_need_a_weights_file_with_a_centre_head(offline_hub, tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    for weights in (str(path), "DEFAULT"):
        with pytest.raises(PretrainedWeightsUnavailable, match="--centres"):
            backbone.object_classes(weights)
    with pytest.raises(ValueError, match="attention"):
        EncoderCNN(8, "resnet18", pretrained="no", objects=5)


@pytest.mark.parametrize("backbone, last_norm", [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_a_backbone_trained_from_scratch_starts_with_identity_residual_blocks(offline_hub, backbone, last_norm):
    def last_scales(encoder):
        blocks = [block for stage in encoder.backbone_stages() for block in stage]
        return [getattr(block, last_norm).weight for block in blocks]
    assert all(not scale.any() for scale in last_scales(EncoderCNN(8, backbone, pretrained="no")))
    # A frozen random backbone keeps torchvision's initialisation: zeroed branches would only throw features away.
    assert all(scale.all() for scale in last_scales(EncoderCNN(8, backbone, pretrained="no", train_backbone="no")))


def test_pretrained_yes_fails_clearly_offline(offline_hub):
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        EncoderCNN(8, "resnet18", pretrained="yes")
    assert str(weights_cache_path("resnet18")) in str(error.value) and "--pretrained no" in str(error.value)


def test_pretrained_auto_falls_back_loudly(offline_hub):
    with pytest.warns(UserWarning, match="RANDOM INITIALISATION"):
        encoder = EncoderCNN(8, "resnet18", pretrained="auto")
    assert not encoder.pretrained and encoder.backbone_trainable



def test_a_local_weights_file_is_loaded_without_any_download(offline_hub, tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "shared" / "my-resnet18.pth"
    path.parent.mkdir()
    torch.save(reference.state_dict(), path)
    encoder = EncoderCNN(8, "resnet18", pretrained="yes", weights=str(path))  # offline_hub fails any download
    assert encoder.pretrained and not encoder.backbone_trainable
    assert torch.equal(encoder.backbone[0].weight, reference.conv1.weight)


@pytest.mark.parametrize("content", ["missing", "other architecture", "code"])
def test_a_weights_file_that_cannot_serve_is_named_in_one_clear_error(offline_hub, tmp_path, content):
    path = tmp_path / "weights.pth"
    if content == "other architecture":
        torch.save(torchvision.models.resnet34().state_dict(), path)
    elif content == "code":
        torch.save({"fc.weight": torch.zeros(1), "hook": print}, path)  # unpickling it would need a function
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        EncoderCNN(8, "resnet18", pretrained="yes", weights=str(path))
    message = str(error.value)
    assert str(path) in message and "\n" not in message


def test_preprocessing_follows_the_weights():
    # torchvision evaluated ResNet-50's V2 weights at resize 232 / crop 224, V1 at 256 / 224.
    assert weights_resize("resnet50", "IMAGENET1K_V2", 224) == 232
    assert weights_resize("resnet50", "DEFAULT", 224) == 232
    assert weights_resize("resnet50", "IMAGENET1K_V1", 224) == 256
    assert weights_resize("resnet50", "IMAGENET1K_V1", 448) == 512  # scaled with the crop
    assert weights_resize("resnet18", "DEFAULT", 224) == 256
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        weights_resize("resnet18", "IMAGENET1K_V2", 224)  # ResNet-18 has only V1


def test_a_weights_file_is_known_by_its_content_not_its_name(tmp_path, monkeypatch):
    path = tmp_path / "renamed.pth"
    path.write_bytes(b"weights")
    v1 = torchvision.models.ResNet50_Weights.IMAGENET1K_V1  # resnet50-0676ba61.pth
    monkeypatch.setattr(backbone, "_sha256", lambda file: "0676ba61" + "0" * 56)
    assert backbone.weights_of_file("resnet50", path) is v1
    assert weights_resize("resnet50", str(path), 224) == 256
    monkeypatch.setattr(backbone, "_sha256", lambda file: "f" * 64)  # weights torchvision does not know
    assert backbone.weights_of_file("resnet50", path) is None
    assert weights_resize("resnet50", str(path), 224) == 232  # preprocessed like the default weights
    with pytest.raises(ValueError, match="does not exist"):
        weights_resize("resnet50", str(tmp_path / "missing.pth"), 224)


def test_pretrained_weights_load_from_the_hub_cache_and_get_frozen(offline_hub):
    reference = torchvision.models.resnet18()
    path = weights_cache_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    encoder = EncoderCNN(8, "resnet18", pretrained="yes")
    assert encoder.pretrained and not encoder.backbone_trainable
    assert torch.equal(encoder.backbone[0].weight, reference.conv1.weight)
    assert all(p.requires_grad for p in encoder.embed.parameters())


def test_frozen_backbone_keeps_batchnorm_in_eval_mode(offline_hub):
    encoder = EncoderCNN(8, "resnet18", pretrained="no", train_backbone="no").train()
    assert not encoder.backbone[1].training and encoder.embed.training
    before = encoder.backbone[1].running_mean.clone()
    encoder(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert torch.equal(before, encoder.backbone[1].running_mean)


def test_fine_tuning_unfreezes_only_the_deepest_stages(offline_hub):
    encoder = EncoderCNN(8, "resnet18", pretrained="no", train_backbone="no")
    encoder.set_backbone_trainable(True, last_stages=1)
    stages = encoder.backbone_stages()
    assert all(p.requires_grad for p in stages[-1].parameters())
    assert not any(p.requires_grad for p in stages[0].parameters())
    assert not encoder.backbone[1].training or not encoder.training


def test_decoder_forward_shape_and_padding():
    decoder = DecoderRNN(16, 32, VOCAB)
    captions = torch.randint(3, VOCAB, (4, 9))
    scores = decoder(torch.randn(4, 16), captions, torch.tensor([9, 5, 7, 3]))
    assert scores.shape == (4, 9, VOCAB)
    unpadded = decoder(torch.randn(2, 16), captions[:2])
    assert unpadded.shape == (2, 9, VOCAB)


def test_a_decoder_given_the_other_kind_of_features_says_what_to_fix():
    captions = torch.randint(3, VOCAB, (2, 5))
    with pytest.raises(ValueError, match="attends over image cells.*config.attention"):
        DecoderRNN(16, 32, VOCAB, attention=True)(torch.randn(2, 16), captions)
    with pytest.raises(ValueError, match="reads one pooled feature per image.*config.attention"):
        DecoderRNN(16, 32, VOCAB).greedy(torch.randn(2, 7, 16))


@pytest.mark.parametrize("query_word", [False, True])
def test_with_query_word_where_the_decoder_looks_depends_on_the_word_it_reads(query_word):
    torch.manual_seed(0)
    decoder = DecoderRNN(16, 32, VOCAB, attention=True, query_word=query_word).eval()
    _, state = decoder.look(image_features(1, 16, attention=True).expand(2, -1, -1))  # one image, twice
    _, weights = decoder.look_for(decoder.embed(torch.tensor([3, 4])), state)  # two different words
    assert weights.shape == (2, 6) and torch.allclose(weights[0], weights[1]) != query_word


def test_with_coverage_where_the_decoder_looks_depends_on_where_it_has_looked():
    torch.manual_seed(0)
    decoder = DecoderRNN(16, 32, VOCAB, attention=True, coverage=True).eval()
    _, state = decoder.look(image_features(1, 16, attention=True))
    for word in (3, 4, 5):
        _, state = decoder.attentive_step(decoder.embed(torch.tensor([word])), state)
    covered = state[-1]  # (cells, batch): each step's attention weights, summed
    assert covered.shape == (6, 1) and torch.isclose(covered.sum(), torch.tensor(3.0))
    word = decoder.embed(torch.tensor([6]))
    _, seen = decoder.look_for(word, state)
    _, fresh = decoder.look_for(word, state[:-1] + (torch.zeros_like(covered),))
    assert not torch.allclose(seen, fresh)


@DECODERS
def test_padded_batch_gives_each_caption_its_own_hidden_states_and_gradients(kind):
    """The LSTM runs over the padding of shorter captions: their real positions must not notice, nor the gradients."""
    torch.manual_seed(0)
    decoder = make_decoder(kind)
    features, captions = image_features(4, 16, kind != "pooled"), torch.randint(3, VOCAB, (4, 8))
    lengths = torch.tensor([5, 2, 8, 5])  # not longest first (the attention decoder sorts them and back)
    hidden = decoder.hidden_states(features, captions, lengths)
    assert (hidden[0, 5:] == 0).all() and (hidden[1, 2:] == 0).all() and (hidden[3, 5:] == 0).all()
    batch_gradients = torch.autograd.grad(hidden.square().sum(), list(decoder.lstm.parameters()))
    alone_gradients = [torch.zeros_like(g) for g in batch_gradients]
    for row, length in enumerate(lengths.tolist()):
        alone = decoder.hidden_states(features[row:row + 1], captions[row:row + 1, :length])
        assert torch.allclose(alone[0], hidden[row, :length], atol=1e-6)
        for total, part in zip(alone_gradients, torch.autograd.grad(alone.square().sum(),
                                                                    list(decoder.lstm.parameters()))):
            total += part
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(batch_gradients, alone_gradients))


@DECODERS
def test_forward_matches_step_by_step_decoding(kind):
    torch.manual_seed(0)
    decoder = make_decoder(kind).eval()
    features, captions = image_features(2, 16, kind != "pooled"), torch.randint(3, VOCAB, (2, 6))
    captions[:, 0] = decoder.start_index
    teacher = torch.log_softmax(decoder(features, captions), dim=-1)
    log_probs, state = decoder.init_state(features)
    assert torch.allclose(teacher[:, 1], log_probs, atol=1e-5)
    log_probs, state = decoder.step(captions[:, 1], state)
    assert torch.allclose(teacher[:, 2], log_probs, atol=1e-5)


@DECODERS
def test_greedy_sampling_stops_each_sequence_at_end(kind):
    torch.manual_seed(0)
    decoder = make_decoder(kind).eval()
    with torch.no_grad():
        decoder.fc.bias[decoder.end_index] = 50.0  # <end> dominates: every caption is just <end>
    out = decoder.greedy(image_features(3, 16, kind != "pooled"), max_len=10)
    assert out.shape == (3, 1) and (out[:, 0] == decoder.end_index).all()
    torch.manual_seed(1)
    decoder = make_decoder(kind).eval()
    out = decoder.greedy(image_features(8, 16, kind != "pooled"), max_len=15)
    for row in out.tolist():
        if decoder.end_index in row:
            after = row[row.index(decoder.end_index) + 1:]
            assert all(word == decoder.pad_index for word in after)


@DECODERS
def test_batched_greedy_equals_one_at_a_time(kind):
    torch.manual_seed(2)
    decoder = make_decoder(kind).eval()
    features = image_features(5, 16, kind != "pooled")
    batched = decoder.greedy(features, max_len=12)
    for index in range(5):
        single = decoder.greedy(features[index:index + 1], max_len=12)[0]
        assert torch.equal(batched[index, :len(single)], single)


def sequence_log_prob(decoder: DecoderRNN, features: torch.Tensor, words: list[int]) -> float:
    log_probs, state = decoder.init_state(features.unsqueeze(0))
    total = 0.0
    for word in words:
        total += log_probs[0, word].item()
        if word == decoder.end_index:
            break
        log_probs, state = decoder.step(torch.tensor([word]), state)
    return total


@DECODERS
def test_beam_of_one_is_greedy_and_wider_beams_find_likelier_captions(kind):
    torch.manual_seed(3)
    decoder = make_decoder(kind).eval()
    with torch.no_grad():
        decoder.fc.bias[decoder.end_index] = 2.0  # captions end within the limit
    features = image_features(6, 16, kind != "pooled")
    greedy = decoder.greedy(features, max_len=10)
    assert torch.equal(decoder.beam_search(features, beam_size=1, max_len=10), greedy)
    beam = decoder.beam_search(features, beam_size=4, max_len=10)
    for index in range(6):
        greedy_words = [w for w in greedy[index].tolist() if w != decoder.pad_index]
        beam_words = [w for w in beam[index].tolist() if w != decoder.pad_index]
        if beam_words[-1] == decoder.end_index and greedy_words[-1] == decoder.end_index:
            assert sequence_log_prob(decoder, features[index], beam_words) >= \
                sequence_log_prob(decoder, features[index], greedy_words) - 1e-5
        assert decoder.end_index not in beam_words[:-1]  # nothing after <end> but padding


@DECODERS
def test_beam_search_sequences_end_at_end_token(kind):
    torch.manual_seed(4)
    decoder = make_decoder(kind).eval()
    with torch.no_grad():
        decoder.fc.bias[decoder.end_index] = 3.0
    out = decoder.beam_search(image_features(4, 16, kind != "pooled"), beam_size=3, max_len=20)
    for row in out.tolist():
        words = [w for w in row if w != decoder.pad_index]
        assert words[-1] == decoder.end_index


@DECODERS
def test_sampled_captions_carry_their_log_probabilities(kind):
    torch.manual_seed(0)
    decoder = make_decoder(kind, 8, 16)
    with torch.no_grad():  # <end> likely enough that rows finish at different steps (finished rows are dropped)
        decoder.fc.bias[decoder.end_index] = 2.0
    features = image_features(6, 8, kind != "pooled")
    words, log_probs = decoder.sample_with_log_probs(features, max_len=7)
    assert words.shape == log_probs.shape and words.size(0) == 6
    lengths = {row.index(decoder.end_index) if decoder.end_index in row else 7 for row in words.tolist()}
    assert len(lengths) >= 3 and min(lengths) < 2  # the check below covers rows that went on after others ended
    for row in range(6):  # each row ends at its first <end>, then <pad> with log-probability 0
        ids = words[row].tolist()
        if decoder.end_index in ids:
            end = ids.index(decoder.end_index)
            assert all(i == decoder.pad_index for i in ids[end + 1:])
            assert not log_probs[row, end + 1:].any()
    # The same as the teacher-forced log-probability of the sampled words.
    captions = torch.cat([torch.full((6, 1), decoder.start_index), words], dim=1)
    forced = torch.log_softmax(decoder(features, captions), dim=-1)[:, 1:]
    expected = forced.gather(2, words.unsqueeze(2)).squeeze(2).masked_fill(log_probs == 0, 0.0)
    assert torch.allclose(log_probs, expected, atol=1e-5)
    log_probs.sum().backward()
    assert decoder.fc.weight.grad is not None and decoder.fc.weight.grad.abs().sum() > 0
