%% The same local work as bench/local.lua, on Erlang/OTP: one-way messages
%% from one process to another, and round trips with one caller, using the
%% idiomatic fast path (a plain send and a selective receive on a ref).
-module(atoll_local).
-export([main/0]).

main() ->
    Send = best_of(3, fun() -> send_rate(2000000) end),
    io:format("BENCH peer.erlang.local.send.rate ~B msg/s~n", [round(Send)]),
    Call = best_of(3, fun() -> call_rate(1000000) end),
    io:format("BENCH peer.erlang.local.call.rate ~B calls/s~n", [round(Call)]),
    halt(0).

best_of(Runs, Fun) ->
    lists:max([Fun() || _ <- lists:seq(1, Runs)]).

seconds(T0, T1) ->
    erlang:convert_time_unit(T1 - T0, native, nanosecond) / 1.0e9.

send_rate(N) ->
    Parent = self(),
    Receiver = spawn_link(fun() -> receive_loop(N, Parent) end),
    T0 = erlang:monotonic_time(),
    send_loop(Receiver, N),
    receive done -> ok end,
    N / seconds(T0, erlang:monotonic_time()).

send_loop(_, 0) -> ok;
send_loop(To, I) -> To ! {ping, I}, send_loop(To, I - 1).

receive_loop(0, Parent) -> Parent ! done;
receive_loop(N, Parent) -> receive {ping, _} -> receive_loop(N - 1, Parent) end.

call_rate(N) ->
    Server = spawn_link(fun echo_loop/0),
    T0 = erlang:monotonic_time(),
    call_loop(Server, N),
    Rate = N / seconds(T0, erlang:monotonic_time()),
    unlink(Server),
    exit(Server, kill),
    Rate.

call_loop(_, 0) -> ok;
call_loop(Server, I) ->
    Ref = make_ref(),
    Server ! {self(), Ref, I},
    receive {Ref, I} -> ok end,
    call_loop(Server, I - 1).

echo_loop() ->
    receive {From, Ref, X} -> From ! {Ref, X}, echo_loop() end.
