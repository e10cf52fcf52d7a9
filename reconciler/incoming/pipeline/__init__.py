"""The incoming-mail pipeline (SPEC I2-I5): pure stages from raw bytes to a ticket event.

How the runner uses it (fetch -> pipeline -> store -> mark done)::

    ctx = context.PipelineContext.from_resources(
        server, namespace_resources, directory=MappingSenderDirectory.from_file(path),
        seen_message_id=store_lookup, thread_lookup=ticket_of_message_ids)
    result = run.process(raw_bytes, ctx, received_at=fetched_at)
    # result.audit      -> write (RECEIVED, [ATTACHMENT_PROCESSED_FAILED...], final)
    # result.event      -> TicketEvent when result.status is PROCESSED (event.to_json())
    # result.attachment_data[sha256] -> bytes of each kept attachment
    # result.notices    -> notifications to send (stripped attachments)
    # result.move_to_error_folder -> unreadable / unexpected: keep the mail for a person

Nothing here does I/O; ``process`` never raises for anything in a mail. The
stages, in the order they run, are ``stages.STAGES``.
"""
