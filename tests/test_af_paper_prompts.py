"""The active-forgetting paper's Appendix C prompts as lm-evaluation-harness tasks
(adaptlang/benchmarks/harness_tasks/af_paper): each renders the paper's template."""
import pytest

from adaptlang import load_config
from adaptlang.benchmarks.lm_eval_tasks import PAPER_TASKS, _manager_for, _options, _plan_specs

pytest.importorskip("lm_eval")

SYSTEM = ("<|im_start|>system\nYou are a large language model trained to solve multiple NLP tasks accurately. "
          "For any given NLP task, you must produce an output that is factually correct and succinct.\n<|im_end|>\n"
          "<|im_start|>user\n")
END = "\n<|im_end|>\n<|im_start|>assistant\n"
# Appendix C's XCOPA figure, its {{...}} fields filled in (the Jinja `if` keeps its spaces)
XCOPA = (SYSTEM + "The task is to perform open-domain commonsense causal reasoning. You will be provided a premise "
         "and two alternatives, where the task is to select the alternative that more plausibly has a causal relation "
         "with the premise. Answer as concisely as possible in the same format as the examples below:\n"
         "Given this premise:\n{premise}\nWhat’s the best option?\n-choice1 : {choice1}\n-choice2 : {choice2}\n"
         "We are looking for {cause} " + END)
BELEBELE = (SYSTEM + "The task is to perform reading comprehension task. Given the following passage, query, and "
            "answer choices, output the letter corresponding to the correct answer.\nPassage: {flores_passage}\n"
            "Query: {question}\nChoices:\nA: {mc_answer1}\nB: {mc_answer2}\nC: {mc_answer3}\nD: {mc_answer4}" + END)
READING = (SYSTEM + "The task is to solve reading comprehension problems. You will be provided questions on a set of "
           "passages and you will need to provide the answer as it appears in the passage. The answer should be in "
           "the same language as the question and the passage.\nContext:{context}\nQuestion:{question}\n"
           "Referring to the passage above, the correct answer to the given question is" + END)


def paper_tasks():
    opts = _options(load_config(["eval.benchmarks=[lm_eval]", "eval.lm_eval.tasks=[af_xcopa]"]))
    return opts, _manager_for(opts)


def test_xcopa_prompt_of_a_vendored_doc_is_the_papers():
    opts, tm = paper_tasks()
    planned, _, _ = _plan_specs(opts, None, None)
    leaf = next(spec for _, name, spec in planned if name == "af_xcopa_et")  # vendored data, no hub
    task = next(iter(tm.load([leaf])["tasks"].values()))
    doc = next(iter(task.test_docs()))
    expected = XCOPA.format(cause=" a cause" if doc["question"] == "cause" else " an effect",
                            **{k: doc[k] for k in ("premise", "choice1", "choice2")})
    assert task.fewshot_context(doc, 0) == expected
    assert task.doc_to_choice(doc) == [doc["choice1"], doc["choice2"]] and task.doc_to_target(doc) == doc["label"]


@pytest.mark.parametrize("template, doc, expected", [
    ("_belebele_template_yaml", {"flores_passage": "P.", "question": "Q?", "mc_answer1": "a", "mc_answer2": "b",
                                 "mc_answer3": "c", "mc_answer4": "d", "correct_answer_num": "3"}, BELEBELE),
    ("_reading_qa_yaml", {"context": "C.", "question": "Q?", "answers": ["x"]}, READING),
])
def test_other_templates_render_the_papers_prompt(template, doc, expected):
    from lm_eval.tasks._yaml_loader import load_yaml
    from lm_eval.utils import apply_template

    config = load_yaml(PAPER_TASKS / template, resolve_func=False)
    assert apply_template(config["doc_to_text"], doc) == expected.format(**doc)


def test_every_paper_task_names_its_language_and_the_groups_are_complete():
    opts, tm = paper_tasks()
    groups = {"af_xcopa": 11, "af_xquad": 12, "af_mlqa": 7}
    for group, count in groups.items():
        assert len([t for t in tm.all_tasks if t.startswith(group + "_")]) == count
    assert len([t for t in tm.all_tasks if t.startswith("af_belebele_")]) >= 40


def test_reading_comprehension_scores():
    import importlib.util

    spec = importlib.util.spec_from_file_location("af_utils", PAPER_TASKS / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    assert utils.squad_scores({"answers": ["the Eiffel Tower", "Eiffel"]}, [" Eiffel Tower."]) == \
        {"exact_match": 1.0, "f1": 1.0}
    scores = utils.squad_scores({"answers": ["red apple"]}, ["apple pie"])
    assert scores["exact_match"] == 0.0 and scores["f1"] == pytest.approx(0.5)
