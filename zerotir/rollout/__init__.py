"""zerotir.rollout: tool-integrated sampling.

    templates.build_prompt / encode_prompt   problem text → prompt (zerotir | toy | chat)
    hf_engine.HFEngine                       torch engine: own KV cache, continuous batching (engine.Engine contract)
    tir.rollout / arollout                   problems → Trajectory records (tools overlapped with generation)
    tree                                     tree rollouts (rollout.branch_*): where a trajectory forks, leaf ids
    toolblock                                a tool call's rendered result, tokenized as an output block
    format                                   the tool-use text format shared with the toy corpus
    sampling, textstream                     pure sampling functions; incremental detokenizer and stop detection
"""
