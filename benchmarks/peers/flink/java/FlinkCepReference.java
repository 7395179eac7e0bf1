// FlinkCEP (Java DataStream Pattern API) reference for telepipe's CepPattern (issue 22, Step 13).
//
// The features MATCH_RECOGNIZE cannot express: followedByAny, allowCombinations, until,
// relaxed loops, group patterns, trailing negations, noSkip, chained where/or, and the side
// output of timed-out partial matches. PyFlink has no CEP module, so this small program is
// compiled with javac against the jars that the apache-flink wheel ships and run by
// run_flink.py (before PyFlink starts its own JVM: one JVM at a time).
//
//   java -cp "<pyflink>/lib/*:<classes>" FlinkCepReference <data dir> <raw out dir> [ids...]
//
// For each pattern it writes <raw out dir>/<id>.tsv, one line per match or timed-out partial
// match: kind (match|timeout) TAB sensor_id TAB the events as "seq:STEP" in event order;
// or <id>.error with Flink's message. run_flink.py turns these into the stored CSVs.
//
// Time: event time = floor(ts_ns / 1e6) ms, as the SQL rowtime; the watermark lags the
// largest timestamp by 100 ms; readings with equal milliseconds are ordered by (ts_ns, seq)
// with CEP's EventComparator, so the order is telepipe's (ts, arrival). Parallelism 1.

import java.io.BufferedReader;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Supplier;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.cep.CEP;
import org.apache.flink.cep.EventComparator;
import org.apache.flink.cep.PatternStream;
import org.apache.flink.cep.functions.PatternProcessFunction;
import org.apache.flink.cep.functions.TimedOutPartialMatchHandler;
import org.apache.flink.cep.nfa.aftermatch.AfterMatchSkipStrategy;
import org.apache.flink.cep.pattern.Pattern;
import org.apache.flink.cep.pattern.conditions.IterativeCondition;
import org.apache.flink.cep.pattern.conditions.SimpleCondition;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.util.CloseableIterator;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

public class FlinkCepReference {

    /** One reading (a Flink POJO). */
    public static class Reading {
        public long seq;
        public int sensorId;
        public long tsNs;
        public double value;
        public int quality;

        public Reading() {}
    }

    /** Equal millisecond timestamps: (ts_ns, seq) order. */
    public static class ByNsThenSeq implements EventComparator<Reading> {
        @Override
        public int compare(Reading a, Reading b) {
            int c = Long.compare(a.tsNs, b.tsNs);
            return c != 0 ? c : Long.compare(a.seq, b.seq);
        }
    }

    interface Cond extends java.io.Serializable {
        boolean test(Reading r);
    }

    static SimpleCondition<Reading> c(Cond cond) {
        return new SimpleCondition<Reading>() {
            @Override
            public boolean filter(Reading r) {
                return cond.test(r);
            }
        };
    }

    static final Cond HI = r -> r.value > 80;
    static final Cond MID = r -> r.value >= 40 && r.value < 60;
    static final Cond LO = r -> r.value < 20;

    static AfterMatchSkipStrategy pastLast() {
        return AfterMatchSkipStrategy.skipPastLastEvent();
    }

    static final class Spec {
        final String id;
        final String data;
        final Supplier<Pattern<Reading, ?>> pattern;
        final boolean timeouts;

        Spec(String id, String data, Supplier<Pattern<Reading, ?>> pattern, boolean timeouts) {
            this.id = id;
            this.data = data;
            this.pattern = pattern;
            this.timeouts = timeouts;
        }
    }

    static List<Spec> specs() {
        List<Spec> s = new ArrayList<>();
        // Cross-checks with MATCH_RECOGNIZE (the same pattern through the Java API).
        s.add(new Spec("cep_relaxed_seq", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(HI))
                .followedBy("B").where(c(MID)).followedBy("C").where(c(LO)), false));
        s.add(new Spec("cep_greedy_plus_overlap", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(r -> r.value > 60 && r.value < 90))
                .oneOrMore().consecutive().greedy()
                .next("B").where(c(r -> r.value > 80)), false));
        s.add(new Spec("cep_issue22_greedy", "issue22", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(r -> r.value > 70))
                .oneOrMore().consecutive().greedy()
                .next("B").where(c(r -> r.value > 80)), false));
        s.add(new Spec("cep_issue22_default", "issue22", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(r -> r.value > 70))
                .oneOrMore().consecutive()
                .next("B").where(c(r -> r.value > 80)), false));
        // Relaxed loops: telepipe's default one_or_more / times_or_more.
        s.add(new Spec("cep_relaxed_plus", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(HI)).oneOrMore()
                .followedBy("B").where(c(LO)), false));
        s.add(new Spec("cep_relaxed_plus_within", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(HI)).oneOrMore()
                .followedBy("B").where(c(LO)).within(Duration.ofMillis(100)), false));
        s.add(new Spec("cep_relaxed_times_or_more_greedy", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(r -> r.value > 60 && r.value < 90))
                .timesOrMore(2).greedy()
                .followedBy("B").where(c(r -> r.value > 80)).within(Duration.ofMillis(100)),
            false));
        // After-match skip: the SQL skip pattern S{2} A+ B, past last event and no skip.
        s.add(new Spec("cep_skip_past_last", "adv", () ->
            Pattern.<Reading>begin("S", pastLast()).where(c(r -> r.value > 50)).times(2).consecutive()
                .next("A").where(c(r -> r.value > 70)).oneOrMore().consecutive().greedy()
                .next("B").where(c(r -> r.value < 60)), false));
        s.add(new Spec("cep_skip_no_skip", "adv", () ->
            Pattern.<Reading>begin("S", AfterMatchSkipStrategy.noSkip()).where(c(r -> r.value > 50))
                .times(2).consecutive()
                .next("A").where(c(r -> r.value > 70)).oneOrMore().consecutive().greedy()
                .next("B").where(c(r -> r.value < 60)), false));
        // followedByAny and allowCombinations (skip till any match).
        s.add(new Spec("cep_followed_by_any", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(HI))
                .followedByAny("B").where(c(MID)).followedBy("C").where(c(LO))
                .within(Duration.ofMillis(100)), false));
        s.add(new Spec("cep_followed_by_any_noskip", "adv", () ->
            Pattern.<Reading>begin("A", AfterMatchSkipStrategy.noSkip()).where(c(HI))
                .followedByAny("B").where(c(MID)).followedBy("C").where(c(LO))
                .within(Duration.ofMillis(100)), false));
        s.add(new Spec("cep_followed_by_noskip", "adv", () ->
            Pattern.<Reading>begin("A", AfterMatchSkipStrategy.noSkip()).where(c(HI))
                .followedBy("B").where(c(MID)).followedBy("C").where(c(LO))
                .within(Duration.ofMillis(100)), false));
        s.add(new Spec("cep_allow_combinations", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(HI)).times(2, 3).allowCombinations()
                .followedBy("B").where(c(LO)).within(Duration.ofMillis(60)), false));
        s.add(new Spec("cep_allow_combinations_noskip", "adv", () ->
            Pattern.<Reading>begin("A", AfterMatchSkipStrategy.noSkip()).where(c(HI)).times(2, 3)
                .allowCombinations().followedBy("B").where(c(LO)).within(Duration.ofMillis(60)),
            false));
        // until: a stop condition for a loop.
        s.add(new Spec("cep_until", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(r -> r.value > 60)).oneOrMore()
                .until(c(r -> r.value < 30)).followedBy("B").where(c(r -> r.value > 90))
                .within(Duration.ofMillis(200)), false));
        s.add(new Spec("cep_until_consecutive", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(r -> r.value > 60)).oneOrMore()
                .consecutive().until(c(r -> r.value >= 90)).next("B").where(c(r -> r.value > 85)),
            false));
        // Group patterns.
        s.add(new Spec("cep_group_plus", "adv", () ->
            Pattern.<Reading, Reading>begin(
                    Pattern.<Reading>begin("A").where(c(r -> r.value > 70))
                        .next("B").where(c(r -> r.value < 60)), pastLast())
                .oneOrMore().consecutive()
                .next("C").where(c(LO)), false));
        s.add(new Spec("cep_group_times_relaxed", "adv", () ->
            Pattern.<Reading>begin("S", pastLast()).where(c(LO))
                .followedBy(Pattern.<Reading>begin("A").where(c(HI))
                    .followedBy("B").where(c(MID)))
                .times(2)
                .within(Duration.ofMillis(300)), false));
        // Negations at the end (telepipe has them today).
        s.add(new Spec("cep_not_followed_by_end", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(HI))
                .notFollowedBy("X").where(c(LO)).within(Duration.ofMillis(50)), true));
        s.add(new Spec("cep_not_next_end", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(HI))
                .notNext("X").where(c(r -> r.value < 50)), false));
        s.add(new Spec("cep_not_followed_by_end_no_within", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(HI))
                .notFollowedBy("X").where(c(LO)), false));
        // Chained where / or: where(c1).or(c2).where(c3) is (c1 OR c2) AND c3.
        s.add(new Spec("cep_where_or_chain", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(r -> r.value > 90))
                .or(c(r -> r.quality == 0)).where(c(r -> r.value > 50))
                .next("B").where(c(r -> r.value < 50)).where(c(r -> r.quality == 192)), false));
        // Iterative condition over the events taken so far (as MATCH_RECOGNIZE's AVG).
        s.add(new Spec("cep_iterative_avg", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(new IterativeCondition<Reading>() {
                    @Override
                    public boolean filter(Reading r, Context<Reading> ctx) throws Exception {
                        double sum = r.value;
                        int n = 1;
                        for (Reading e : ctx.getEventsForPattern("A")) {
                            sum += e.value;
                            n++;
                        }
                        return sum / n > 70;
                    }
                }).oneOrMore().consecutive()
                .next("B").where(new IterativeCondition<Reading>() {
                    @Override
                    public boolean filter(Reading r, Context<Reading> ctx) throws Exception {
                        double sum = 0;
                        int n = 0;
                        for (Reading e : ctx.getEventsForPattern("A")) {
                            sum += e.value;
                            n++;
                        }
                        return n > 0 && r.value < sum / n - 30;
                    }
                }), false));
        // Timed-out partial matches (side output) and WITHIN at its boundary.
        s.add(new Spec("cep_timeouts", "adv", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(HI))
                .followedBy("B").where(c(LO)).within(Duration.ofMillis(100)), true));
        s.add(new Spec("cep_within_boundary", "within", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(r -> r.value > 80))
                .followedBy("B").where(c(r -> r.value < 20)).within(Duration.ofSeconds(5)), true));
        // Equal timestamps.
        s.add(new Spec("cep_ties_relaxed", "ties", () ->
            Pattern.<Reading>begin("A", pastLast()).where(c(HI))
                .followedBy("B").where(c(MID)).followedBy("C").where(c(LO)), false));
        return s;
    }

    static List<Reading> read(Path csv) throws IOException {
        List<Reading> rows = new ArrayList<>();
        try (BufferedReader in = Files.newBufferedReader(csv)) {
            for (String line; (line = in.readLine()) != null; ) {
                if (line.startsWith("#") || line.isEmpty()) continue;
                String[] f = line.split(",");
                Reading r = new Reading();
                r.seq = Long.parseLong(f[0]);
                r.sensorId = Integer.parseInt(f[1]);
                r.tsNs = Long.parseLong(f[3]);
                r.value = Double.parseDouble(f[4]);
                r.quality = Integer.parseInt(f[5]);
                rows.add(r);
            }
        }
        return rows;
    }

    static String describe(Map<String, List<Reading>> match) {
        List<Object[]> events = new ArrayList<>();
        int sensor = -1;
        for (Map.Entry<String, List<Reading>> e : match.entrySet()) {
            for (Reading r : e.getValue()) {
                events.add(new Object[] {r, e.getKey()});
                sensor = r.sensorId;
            }
        }
        ByNsThenSeq order = new ByNsThenSeq();
        events.sort((a, b) -> order.compare((Reading) a[0], (Reading) b[0]));
        StringBuilder sb = new StringBuilder().append(sensor).append('\t');
        for (int i = 0; i < events.size(); i++) {
            if (i > 0) sb.append(' ');
            sb.append(((Reading) events.get(i)[0]).seq).append(':').append(events.get(i)[1]);
        }
        return sb.toString();
    }

    static final OutputTag<String> TIMED_OUT = new OutputTag<String>("timed-out") {};

    static class Emit extends PatternProcessFunction<Reading, String>
            implements TimedOutPartialMatchHandler<Reading> {
        @Override
        public void processMatch(Map<String, List<Reading>> match, Context ctx, Collector<String> out) {
            out.collect("match\t" + describe(match));
        }

        @Override
        public void processTimedOutMatch(Map<String, List<Reading>> match, Context ctx) {
            ctx.output(TIMED_OUT, "timeout\t" + describe(match));
        }
    }

    public static void main(String[] args) throws Exception {
        Path data = Paths.get(args[0]);
        Path out = Paths.get(args[1]);
        Set<String> only = new HashSet<>(Arrays.asList(args).subList(2, args.length));
        Files.createDirectories(out);
        Map<String, List<Reading>> sets = new LinkedHashMap<>();
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(1);
        for (Spec spec : specs()) {
            if (!only.isEmpty() && !only.contains(spec.id)) continue;
            Files.deleteIfExists(out.resolve(spec.id + ".tsv"));
            Files.deleteIfExists(out.resolve(spec.id + ".error"));
            long t0 = System.nanoTime();
            List<String> lines = new ArrayList<>();
            try {
                if (!sets.containsKey(spec.data)) {
                    sets.put(spec.data, read(data.resolve(spec.data + ".csv")));
                }
                DataStream<Reading> readings = env.fromData(sets.get(spec.data))
                    .assignTimestampsAndWatermarks(
                        WatermarkStrategy.<Reading>forBoundedOutOfOrderness(Duration.ofMillis(100))
                            .withTimestampAssigner((r, ts) -> Math.floorDiv(r.tsNs, 1_000_000L)));
                PatternStream<Reading> ps = CEP.pattern(
                    readings.keyBy(r -> r.sensorId), spec.pattern.get(), new ByNsThenSeq());
                SingleOutputStreamOperator<String> matches = ps.process(new Emit());
                DataStream<String> all = spec.timeouts
                    ? matches.union(matches.getSideOutput(TIMED_OUT)) : matches;
                try (CloseableIterator<String> it = all.executeAndCollect(spec.id)) {
                    it.forEachRemaining(lines::add);
                }
            } catch (Exception e) {
                StringWriter sw = new StringWriter();
                Throwable root = e;
                while (root.getCause() != null && root.getCause() != root) root = root.getCause();
                sw.append(e.getClass().getName()).append(": ").append(String.valueOf(e.getMessage()));
                if (root != e) {
                    sw.append(" ... root cause: ").append(root.getClass().getName()).append(": ")
                        .append(String.valueOf(root.getMessage()));
                }
                Files.writeString(out.resolve(spec.id + ".error"), sw.toString() + "\n");
                System.out.printf("%-34s error: %s%n", spec.id, sw.toString().replace('\n', ' '));
                continue;
            }
            lines.sort(Comparator.naturalOrder());
            Files.write(out.resolve(spec.id + ".tsv"), lines);
            System.out.printf("%-34s %6d rows %6.1fs%n", spec.id, lines.size(),
                (System.nanoTime() - t0) / 1e9);
        }
    }
}
