// The ISA's two-level loop over two affine walks (`Walk`): iteration (o, i) of an
// n_outer × n_inner loop touches row base + o·stride_outer + i·stride_inner of each walk.
// `start_i` latches a loop, whose first iteration is current from the next cycle; `step_i`
// moves to the next iteration. Rows advance by adding strides, so no multiplier is needed.
module sinter_walk2 (
  input  logic        clk_i,
  input  logic        start_i,
  input  logic        step_i,
  input  logic [15:0] n_outer_i,
  input  logic [15:0] n_inner_i,
  input  logic [15:0] a_base_i,
  input  logic [15:0] a_stride_outer_i,
  input  logic [15:0] a_stride_inner_i,
  input  logic [15:0] b_base_i,
  input  logic [15:0] b_stride_outer_i,
  input  logic [15:0] b_stride_inner_i,
  output logic [15:0] a_row_o,
  output logic [15:0] b_row_o,
  output logic        last_o      // the current iteration is the last
);
  logic [15:0] n_outer_q, n_inner_q, o_q, i_q;
  logic [15:0] a_outer_q, a_so_q, a_si_q, b_outer_q, b_so_q, b_si_q;
  logic        wrap;
  assign wrap   = (i_q == n_inner_q - 16'd1);
  assign last_o = wrap && (o_q == n_outer_q - 16'd1);

  always_ff @(posedge clk_i) begin
    if (start_i) begin
      n_outer_q <= n_outer_i;        n_inner_q <= n_inner_i;
      a_outer_q <= a_base_i;         a_row_o   <= a_base_i;
      a_so_q    <= a_stride_outer_i; a_si_q    <= a_stride_inner_i;
      b_outer_q <= b_base_i;         b_row_o   <= b_base_i;
      b_so_q    <= b_stride_outer_i; b_si_q    <= b_stride_inner_i;
      o_q       <= '0;
      i_q       <= '0;
    end else if (step_i) begin
      if (wrap) begin
        i_q       <= '0;
        o_q       <= o_q + 16'd1;
        a_outer_q <= a_outer_q + a_so_q;
        a_row_o   <= a_outer_q + a_so_q;
        b_outer_q <= b_outer_q + b_so_q;
        b_row_o   <= b_outer_q + b_so_q;
      end else begin
        i_q     <= i_q + 16'd1;
        a_row_o <= a_row_o + a_si_q;
        b_row_o <= b_row_o + b_si_q;
      end
    end
  end
endmodule
