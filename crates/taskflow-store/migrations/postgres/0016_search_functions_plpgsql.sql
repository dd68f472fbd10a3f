-- The search document is computed for every task written (`tasks.search` is a stored generated
-- column). As SQL functions with `SET search_path`, `taskflow_search_document` and the three
-- `taskflow_fold` calls inside it could not be inlined, so every INSERT or UPDATE of a task
-- parsed and planned the four function bodies again and switched `search_path` four times:
-- about a third of PostgreSQL's time for a task insert (measured: a loop of the create
-- statement, 0.42-0.53 ms per task before, 0.27-0.37 ms after).
--
-- The same functions in PL/pgSQL keep their compiled bodies and plans for the session. Instead
-- of pinning `search_path`, every name in them is schema-qualified (`pg_catalog`, the
-- extension's schema, the schema the functions live in), so a dump restored with an empty
-- `search_path` still computes them. Their results do not change, so the stored documents stay
-- valid. The choice between `unaccent` and the built-in table is the one 0001 made.
DO $migration$
DECLARE
    own_schema text := current_schema();
    current_fold regprocedure;
    extension_schema text;
    fold_body text;
BEGIN
    current_fold := pg_catalog.to_regprocedure(
        pg_catalog.quote_ident(own_schema) || '.taskflow_fold(text)');
    IF current_fold IS NULL THEN
        RAISE EXCEPTION 'taskflow_fold(text) is not in schema %, where 0001 created it', own_schema;
    END IF;
    SELECT n.nspname INTO extension_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'unaccent';
    IF extension_schema IS NOT NULL
       AND pg_catalog.strpos(pg_catalog.pg_get_functiondef(current_fold), 'unaccent') > 0 THEN
        fold_body := format('RETURN pg_catalog.lower(%I.unaccent(%L::regdictionary, input));',
                            extension_schema, quote_ident(extension_schema) || '.unaccent');
    ELSE
        fold_body := $fold$RETURN pg_catalog.lower(pg_catalog.translate(input,
                'ÀÁÂÃÄÅĀĂĄàáâãäåāăąÇĆĈĊČçćĉċčĎĐďđÈÉÊËĒĔĖĘĚèéêëēĕėęěĜĞĠĢĝğġģĤĦĥħÌÍÎÏĨĪĬĮİìíîïĩīĭįıĴĵĶķĹĻĽĿŁĺļľŀłÑŃŅŇñńņňÒÓÔÕÖØŌŎŐòóôõöøōŏőŔŖŘŕŗřŚŜŞŠśŝşšȘșŢŤŦţťŧȚțÙÚÛÜŨŪŬŮŰŲùúûüũūŭůűųŴŵÝŶŸýÿŷŹŻŽźżž',
                'AAAAAAAAAaaaaaaaaaCCCCCcccccDDddEEEEEEEEEeeeeeeeeeGGGGggggHHhhIIIIIIIIIiiiiiiiiiJjKkLLLLLlllllNNNNnnnnOOOOOOOOOoooooooooRRRrrrSSSSssssSsTTTtttTtUUUUUUUUUUuuuuuuuuuuWwYYYyyyZZZzzz'));$fold$;
    END IF;

    EXECUTE format(
        'CREATE OR REPLACE FUNCTION %I.taskflow_fold(input text) RETURNS text
         LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
         AS %L',
        own_schema, 'BEGIN ' || fold_body || ' END');

    EXECUTE format(
        'CREATE OR REPLACE FUNCTION %I.taskflow_search_document(title text, tags text[], description text)
         RETURNS tsvector
         LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
         AS %L',
        own_schema,
        format($body$BEGIN
            RETURN pg_catalog.setweight(pg_catalog.to_tsvector('pg_catalog.simple'::regconfig,
                       %1$I.taskflow_fold(coalesce(title, ''))), 'A')
                || pg_catalog.setweight(pg_catalog.to_tsvector('pg_catalog.simple'::regconfig,
                       %1$I.taskflow_fold(pg_catalog.array_to_string(tags, ' '))), 'B')
                || pg_catalog.setweight(pg_catalog.to_tsvector('pg_catalog.simple'::regconfig,
                       %1$I.taskflow_fold(coalesce(description, ''))), 'C');
        END$body$, own_schema));
END
$migration$;
