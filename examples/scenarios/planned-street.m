% A low-voltage street as a distribution planner draws it (MATPOWER version 2, per unit on 1 MVA):
% the 20 kV grid (bus 1), a 160 kVA 20/0.4 kV transformer (1 % + j4 % on its rating) to the
% street's busbar (bus 2), a NAYY 4x150 main cable (0.206 + j0.080 ohm/km, 270 A) with a bus every
% 40 m (buses 3-8), and a NAYY 4x50 side street (0.641 + j0.083 ohm/km, 142 A) off bus 5, a bus
% every 30 m (buses 9-10). The case's loads are replaced by the scenario's homes.
function mpc = planned_street
mpc.version = '2';
mpc.baseMVA = 1;
%% bus_i type Pd Qd Gs Bs area Vm Va baseKV zone Vmax Vmin
mpc.bus = [
  1  3 0 0 0 0 1 1 0 20  1 1.1 0.9;
  2  1 0 0 0 0 1 1 0 0.4 1 1.1 0.9;
  3  1 0 0 0 0 1 1 0 0.4 1 1.1 0.9;
  4  1 0 0 0 0 1 1 0 0.4 1 1.1 0.9;
  5  1 0 0 0 0 1 1 0 0.4 1 1.1 0.9;
  6  1 0 0 0 0 1 1 0 0.4 1 1.1 0.9;
  7  1 0 0 0 0 1 1 0 0.4 1 1.1 0.9;
  8  1 0 0 0 0 1 1 0 0.4 1 1.1 0.9;
  9  1 0 0 0 0 1 1 0 0.4 1 1.1 0.9;
  10 1 0 0 0 0 1 1 0 0.4 1 1.1 0.9;
];
%% bus Pg Qg Qmax Qmin Vg mBase status Pmax Pmin
mpc.gen = [
  1 0 0 10 -10 1 1 1 10 0;
];
%% fbus tbus r x b rateA rateB rateC ratio angle status angmin angmax
mpc.branch = [
  1 2 0.0625 0.25   0 0.16  0 0 0 0 1 -360 360;
  2 3 0.0515 0.02   0 0.187 0 0 0 0 1 -360 360;
  3 4 0.0515 0.02   0 0.187 0 0 0 0 1 -360 360;
  4 5 0.0515 0.02   0 0.187 0 0 0 0 1 -360 360;
  5 6 0.0515 0.02   0 0.187 0 0 0 0 1 -360 360;
  6 7 0.0515 0.02   0 0.187 0 0 0 0 1 -360 360;
  7 8 0.0515 0.02   0 0.187 0 0 0 0 1 -360 360;
  5 9 0.1202 0.0156 0 0.098 0 0 0 0 1 -360 360;
  9 10 0.1202 0.0156 0 0.098 0 0 0 0 1 -360 360;
];
