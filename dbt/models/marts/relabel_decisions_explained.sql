-- Each relabel decision beside the texts behind it: the query, the passage and the LLM's snippet,
-- so a reviewer can judge a decision without a join of their own.
select
    d.dataset,
    d.config,
    d.query_id,
    t.query_text,
    d.doc_id,
    p.title,
    p.text as passage_text,
    c.source as candidate_source,
    d.original_label,
    d.decision,
    s.snippet,
    d.snippet_status,
    d.has_snippet,
    d.llm_rank,
    d.positive_rank,
    d.ranking_status,
    d.query_kept,
    d.query_note
from {{ ref('stg_relabel_decisions') }} as d
left join {{ ref('stg_raw_triplets') }} as t using (dataset, query_id)
left join {{ ref('stg_raw_passages') }} as p using (dataset, doc_id)
left join {{ ref('stg_mined_negatives') }} as c using (dataset, query_id, doc_id)
left join {{ ref('stg_answer_snippets') }} as s using (dataset, query_id, doc_id)
order by d.dataset, d.config, d.query_id, d.llm_rank nulls last, d.doc_id
