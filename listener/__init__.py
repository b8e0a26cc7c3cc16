"""The listener: events from RabbitMQ to execution records.

The event path reads as its modules: ``consume`` (take a message, ack it when
done) → ``events`` (parse the contract) → ``match`` (which functions) →
``execute`` (claim the record, provision, store the outcome). ``topology``
declares the queues, ``publish`` sends events with confirms, ``invoker`` is the
API's way in, and ``service.Listener`` is the process (`lambda-os listener`).
Only ``consume``, ``publish``, ``topology`` and ``service`` talk to pika.
"""
