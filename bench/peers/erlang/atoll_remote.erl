%% The same remote work as bench/remote.lua, between two distributed Erlang
%% nodes on loopback: one-way messages to a process on the other node, round
%% trips with one and 64 callers, and latency at 10,000 calls/s.
%%
%% Erlang's fastest path: messages go to the remote processes' pids, looked
%% up once. Sending to a registered name ({sink, Node}) makes the receiving
%% node resolve the name for every message, which cost 40% of the send rate.
-module(atoll_remote).
-export([server/0, main/1]).

%% On the server node: a sink and an echo; their pids go back to the client.
server() ->
    {spawn(fun() -> sink(0) end), spawn(fun echo/0)}.

sink(N) ->
    receive
        {ping, _} -> sink(N + 1);
        {count, From, Ref} -> From ! {Ref, N}, sink(N);
        reset -> sink(0)
    end.

echo() ->
    receive {From, Ref, X} -> From ! {Ref, X}, echo() end.

call(To, X) ->
    Ref = make_ref(),
    To ! {self(), Ref, X},
    receive {Ref, R} -> R end.

count(Sink) ->
    Ref = make_ref(),
    Sink ! {count, self(), Ref},
    receive {Ref, N} -> N end.

now_s() -> erlang:monotonic_time(nanosecond) / 1.0e9.

%% The server node starts beside this one: try for up to 10 s before giving up.
connect(Server, 0) -> erlang:error({cannot_connect, Server});
connect(Server, Tries) ->
    case net_kernel:connect_node(Server) of
        true -> ok;
        _ -> timer:sleep(100), connect(Server, Tries - 1)
    end.

main([ServerNode]) ->
    Server = list_to_atom(ServerNode),
    ok = connect(Server, 100),
    {Sink, Echo} = rpc:call(Server, atoll_remote, server, []),
    [call(Echo, I) || I <- lists:seq(1, 20000)],

    N = 2000000,
    %% The best of three runs, as for atoll.
    SendRate = lists:max([begin
                              Sink ! reset,
                              T0 = now_s(),
                              send_loop(Sink, N),
                              N = count(Sink),
                              N / (now_s() - T0)
                          end || _ <- lists:seq(1, 3)]),
    report("remote.send.rate", SendRate, "msg/s"),

    Calls = 20000,
    T1 = now_s(),
    [call(Echo, I) || I <- lists:seq(1, Calls)],
    report("remote.call.rate", Calls / (now_s() - T1), "calls/s"),

    Per = 2000,
    Parent = self(),
    T2 = now_s(),
    Pids = [spawn(fun() -> [call(Echo, I) || I <- lists:seq(1, Per)], Parent ! {done, self()} end)
            || _ <- lists:seq(1, 64)],
    [receive {done, P} -> ok end || P <- Pids],
    report("remote.call.rate.c64", 64 * Per / (now_s() - T2), "calls/s"),

    Rate = 10000, Seconds = 5,
    Total = Rate * Seconds,
    Start = now_s(),
    open_loop(Echo, Start, Rate, 0, Total),
    Lat = lists:sort([receive {lat, L} -> L end || _ <- lists:seq(1, Total)]),
    report("remote.call.p50.us", lists:nth(Total div 2, Lat), "us"),
    report("remote.call.p99.us", lists:nth(Total * 99 div 100, Lat), "us"),
    rpc:call(Server, erlang, halt, [0]),
    halt(0).

send_loop(_, 0) -> ok;
send_loop(To, I) -> To ! {ping, I}, send_loop(To, I - 1).

%% A call every 1/Rate s, each timed from when it was due.
open_loop(_, _, _, Total, Total) -> ok;
open_loop(Echo, Start, Rate, I, Total) ->
    Due = Start + I / Rate,
    case now_s() >= Due of
        true ->
            Parent = self(),
            spawn(fun() -> call(Echo, I), Parent ! {lat, (now_s() - Due) * 1.0e6} end),
            open_loop(Echo, Start, Rate, I + 1, Total);
        false ->
            open_loop(Echo, Start, Rate, I, Total)
    end.

report(Name, Value, Unit) ->
    io:format("BENCH peer.erlang.~s ~B ~s~n", [Name, round(Value), Unit]).
