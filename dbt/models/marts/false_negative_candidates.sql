-- Negatives the LLM found an answer in (snippet status 'answer') and ranked above every original
-- positive: the likeliest false negatives, most confident (widest rank margin) first. The
-- decisions repeat per configuration; this is one row per (dataset, query, passage), with the
-- configurations that relabeled it.
with flagged as (
    select
        dataset,
        query_id,
        doc_id,
        any_value(llm_rank) as llm_rank,
        any_value(positive_rank) as positive_rank,
        list(config order by config) filter (where decision = 'relabel_positive') as relabeled_in
    from {{ ref('stg_relabel_decisions') }}
    where original_label = 'negative'
      and snippet_status = 'answer'
      and llm_rank < positive_rank
    group by all
)

select
    row_number() over (order by f.positive_rank - f.llm_rank desc, f.llm_rank, f.dataset, f.query_id, f.doc_id) as confidence_rank,
    f.dataset,
    f.query_id,
    t.query_text,
    f.doc_id,
    p.title,
    p.text as passage_text,
    s.snippet,
    f.llm_rank,
    f.positive_rank,
    f.positive_rank - f.llm_rank as rank_margin,
    f.relabeled_in
from flagged as f
left join {{ ref('stg_raw_triplets') }} as t using (dataset, query_id)
left join {{ ref('stg_raw_passages') }} as p using (dataset, doc_id)
left join {{ ref('stg_answer_snippets') }} as s using (dataset, query_id, doc_id)
order by confidence_rank
