"""What the test modules share: data builders, constants, helper functions and the scripts run
in subprocesses. Test modules import from here, never from one another.

- `toy_data`: the hand-made corpus, its queries and triplets, toy candidate lists;
- `refine_data`: the hand-made candidates, snippets and ranking the decision rule is tested on;
- `formats`: landed-file lines in the BGE and Tevatron formats;
- `llm_stages`: the SmolLM2 backend, a toy LLM stage and the scripts a killed run executes;
- `processes`: running a script in a process killed once the call cache holds N calls;
- `training`: a toy fine-tuning run and the script a killed training executes;
- `warehouse`: `dbt build`, reading the lake and the warehouse, and every mart checked against the lake;
- `llm_server`: a real llama.cpp server (`arhn llm-server`) as a subprocess;
- `run_configs`: run config pieces (the SmolLM2 judge, a query sample);
- `workers`: each pytest-xdist worker's share of the cores (`make test-fast`, the first pass of `make test`).
"""
